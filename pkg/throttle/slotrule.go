package throttle

import "github.com/sluice-dev/sluice/pkg/throttle/internal/slots"

// slotTable is one shard's hash table: rules in slots, their details beside them.
type slotTable = slots.Table[*ruleDetail]

func newSlotTable(n int) *slotTable { return slots.New[*ruleDetail](n) }

// ruleAt returns the rule in slot i of st.
func ruleAt(st *slotTable, i int) Rule {
	e := st.Entry(i)
	return Rule{Limit: e.Limit, Window: e.Window, Mode: Mode(e.Mode), expires: e.Expires, created: e.Created, detail: st.Detail(i)}
}

// entry is the part of r a slot holds.
func (r Rule) entry() slots.Entry {
	return slots.Entry{Mode: uint8(r.Mode), Limit: r.Limit, Window: r.Window, Expires: r.expires, Created: r.created}
}

// LongKey and SetLongKey keep a customer id too long for a slot (slots.InlineKey).
func (d *ruleDetail) LongKey() string      { return d.customer }
func (d *ruleDetail) SetLongKey(id string) { d.customer = id }
