//go:build !unix

package kafkacluster

// alive cannot tell here, so it never lets a directory be swept.
func alive(int) bool { return true }
