package deploycheck

// Topic is a topic as a deployment file creates it.
type Topic struct {
	Where      string // the file and the resource or service that creates it, for messages
	Partitions int
	Replicas   int
	Configs    map[string]string
}

// EqualConfigs reports whether got, a topic's configs as a deployment file sets them,
// are want: the same keys with the same values.
func EqualConfigs(got, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}
