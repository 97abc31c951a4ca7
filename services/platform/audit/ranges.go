package audit

import "sort"

// Ranges is a set of offsets as sorted, disjoint, non-adjacent half-open ranges
// [from, to). A partition's consumer handles offsets in order, so Add mostly extends the
// last range and a bucket's set stays a few ranges long.
type Ranges [][2]int64

// Add puts offset in the set.
func (r Ranges) Add(offset int64) Ranges {
	n := len(r)
	if n > 0 && r[n-1][1] == offset {
		r[n-1][1]++
		return r
	}
	if n == 0 || r[n-1][1] < offset {
		return append(r, [2]int64{offset, offset + 1})
	}
	return r.Union(Ranges{{offset, offset + 1}})
}

// Has reports whether offset is in the set.
func (r Ranges) Has(offset int64) bool {
	i := sort.Search(len(r), func(i int) bool { return r[i][1] > offset })
	return i < len(r) && r[i][0] <= offset
}

// Len is how many offsets the set holds.
func (r Ranges) Len() int64 {
	var n int64
	for _, x := range r {
		n += x[1] - x[0]
	}
	return n
}

// Union returns the offsets in r or o, as a new set.
func (r Ranges) Union(o Ranges) Ranges {
	all := make(Ranges, 0, len(r)+len(o))
	all = append(append(all, r...), o...)
	sort.Slice(all, func(i, j int) bool { return all[i][0] < all[j][0] })
	out := all[:0]
	for _, x := range all {
		if x[1] <= x[0] {
			continue
		}
		if k := len(out) - 1; k >= 0 && x[0] <= out[k][1] {
			out[k][1] = max(out[k][1], x[1])
			continue
		}
		out = append(out, x)
	}
	return out
}

// Minus returns the offsets in r that are not in o.
func (r Ranges) Minus(o Ranges) Ranges {
	var out Ranges
	o = o.Union(nil)
	j := 0
	for _, x := range r {
		from := x[0]
		for j < len(o) && o[j][1] <= from {
			j++
		}
		for k := j; k < len(o) && o[k][0] < x[1] && from < x[1]; k++ {
			if o[k][0] > from {
				out = append(out, [2]int64{from, o[k][0]})
			}
			from = max(from, o[k][1])
		}
		if from < x[1] {
			out = append(out, [2]int64{from, x[1]})
		}
	}
	return out
}

// valid reports whether r is sorted, disjoint and made of non-empty ranges, as a decoded
// record must be.
func (r Ranges) valid() bool {
	for i, x := range r {
		if x[0] < 0 || x[1] <= x[0] || (i > 0 && x[0] <= r[i-1][1]) {
			return false
		}
	}
	return true
}
