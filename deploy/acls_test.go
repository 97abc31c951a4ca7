package deploy

import (
	"maps"
	"slices"
	"testing"

	"github.com/sluice-dev/sluice/deploy/deploycheck"
)

// TestStrimziUsersMatchACLFile runs everywhere: the KafkaUser resources grant exactly what
// deploy/acls/acls.yaml, which the secured-cluster tests apply, says.
func TestStrimziUsersMatchACLFile(t *testing.T) {
	root := ".."
	want := deploycheck.ACLs(t, root)
	got := deploycheck.StrimziUsers(t, root)
	var users []string
	for _, prog := range slices.Sorted(maps.Keys(want)) {
		p := want[prog]
		users = append(users, p.User)
		rules, ok := got[p.User]
		if !ok {
			t.Errorf("%s: no KafkaUser %s under deploy/k8s", prog, p.User)
			continue
		}
		if !slices.EqualFunc(rules, p.ACLs, func(a, b deploycheck.ACLRule) bool {
			return a.Resource == b.Resource && a.Name == b.Name && a.Pattern == b.Pattern && slices.Equal(a.Operations, b.Operations)
		}) {
			t.Errorf("KafkaUser %s: got acls %+v, want %+v (as in %s)", p.User, rules, p.ACLs, deploycheck.ACLFile)
		}
	}
	for u := range got {
		if !slices.Contains(users, u) {
			t.Errorf("KafkaUser %s: not in %s", u, deploycheck.ACLFile)
		}
	}
}
