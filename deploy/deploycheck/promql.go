package deploycheck

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// promQuery is what the checks need from a PromQL expression: the series selectors and
// the labels of its by/without/on/ignoring/group_left/group_right clauses.
type promQuery struct {
	Selectors []promSelector
	Grouping  []string
}

type promSelector struct {
	Metric   string
	Matchers []promMatcher
}

type promMatcher struct {
	Label, Op, Value string
}

var (
	promIdent    = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true}
	// Aggregations may put their by/without clause before the parenthesis.
	promAggregators = map[string]bool{
		"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true, "count": true,
		"count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
	}
	promGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
)

// parsePromQL reads the selectors of a PromQL expression. It is no full parser, but it
// knows where metric names can be: not in strings, label matchers, ranges or after
// function names, and it fails on what it does not understand rather than skip it.
func parsePromQL(expr string) (promQuery, error) {
	var q promQuery
	s := expr
	pos := func() int { return len(expr) - len(s) }
	readString := func() (string, error) {
		quote := s[0]
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case quote:
				v := s[1:i]
				if quote != '`' {
					if u, err := strconv.Unquote(`"` + strings.ReplaceAll(v, `"`, `\"`) + `"`); err == nil {
						v = u
					}
				}
				s = s[i+1:]
				return v, nil
			}
		}
		return "", fmt.Errorf("unterminated string at %d in %q", pos(), expr)
	}
	skipSpace := func() { s = strings.TrimLeft(s, " \t\r\n") }
	lastMetric := false // the previous token was a metric name: a { belongs to it
	for {
		skipSpace()
		if s == "" {
			return q, nil
		}
		switch c := s[0]; {
		case c == '"' || c == '\'' || c == '`':
			if _, err := readString(); err != nil {
				return q, err
			}
			lastMetric = false
		case c == '{':
			var sel *promSelector
			if lastMetric {
				sel = &q.Selectors[len(q.Selectors)-1]
			} else {
				q.Selectors = append(q.Selectors, promSelector{})
				sel = &q.Selectors[len(q.Selectors)-1]
			}
			s = s[1:]
			for {
				skipSpace()
				if strings.HasPrefix(s, "}") {
					s = s[1:]
					break
				}
				if strings.HasPrefix(s, ",") {
					s = s[1:]
					continue
				}
				label := promIdent.FindString(s)
				if label == "" {
					return q, fmt.Errorf("bad label matcher at %d in %q", pos(), expr)
				}
				s = s[len(label):]
				skipSpace()
				op := ""
				for _, o := range []string{"=~", "!~", "!=", "="} {
					if strings.HasPrefix(s, o) {
						op = o
						break
					}
				}
				if op == "" {
					return q, fmt.Errorf("bad matcher operator at %d in %q", pos(), expr)
				}
				s = s[len(op):]
				skipSpace()
				if s == "" || !strings.ContainsRune("\"'`", rune(s[0])) {
					return q, fmt.Errorf("matcher %s without a string at %d in %q", label, pos(), expr)
				}
				v, err := readString()
				if err != nil {
					return q, err
				}
				if label == "__name__" && op == "=" {
					sel.Metric = v
					continue
				}
				sel.Matchers = append(sel.Matchers, promMatcher{Label: label, Op: op, Value: v})
			}
			lastMetric = false
		case c == '[':
			end := strings.IndexByte(s, ']')
			if end < 0 {
				return q, fmt.Errorf("unterminated range at %d in %q", pos(), expr)
			}
			s = s[end+1:]
			lastMetric = false
		case c == '$': // a Grafana variable such as $__rate_interval
			s = s[1:]
			s = s[len(promIdent.FindString(s)):]
			lastMetric = false
		case c >= '0' && c <= '9' || c == '.':
			i := 0
			for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.' || s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z' || s[i] == '_') {
				i++
			}
			s = s[i:]
			lastMetric = false
		case promIdent.MatchString(s):
			id := promIdent.FindString(s)
			s = s[len(id):]
			rest := strings.TrimLeft(s, " \t\r\n")
			switch {
			case promGrouping[id] && strings.HasPrefix(rest, "("):
				end := strings.IndexByte(rest, ')')
				if end < 0 {
					return q, fmt.Errorf("unterminated %s ( at %d in %q", id, pos(), expr)
				}
				for _, l := range strings.Split(rest[1:end], ",") {
					if l = strings.TrimSpace(l); l != "" {
						q.Grouping = append(q.Grouping, l)
					}
				}
				s = rest[end+1:]
				lastMetric = false
			case promGrouping[id]: // group_left without labels
				lastMetric = false
			case strings.HasPrefix(rest, "("), promAggregators[id]: // a function or an aggregation
				lastMetric = false
			case promKeywords[strings.ToLower(id)]:
				lastMetric = false
			default:
				q.Selectors = append(q.Selectors, promSelector{Metric: id})
				lastMetric = true
			}
		case strings.ContainsRune("()+-*/%^,<>=!", rune(c)):
			s = s[1:]
			lastMetric = false
		default:
			return q, fmt.Errorf("unexpected %q at %d in %q", c, pos(), expr)
		}
	}
}
