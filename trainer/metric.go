package trainer

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gantry-ml/gantry"
)

// DefaultPattern is the regexp used when a job gives none. It takes, in any
// case, the word "accuracy" (not part of a longer word such as "inaccuracy" or
// "val_accuracy"), then ':' or '=', then a number: "Model accuracy: 0.9667",
// "accuracy=0.97", "Accuracy: 96.67%". A line where no number follows
// ("Accuracy: n/a", "accuracy improved") does not match. "nan" and "inf" do
// match, so that a program that reports them fails its gate rather than have
// an older line count. Keras's "val_accuracy" is not taken: a job that gates
// on it gives its own pattern.
const DefaultPattern = `(?i)\baccuracy\s*[:=]\s*([-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?|(?:nan|inf(?:inity)?)\b))`

// MaxPatternLen is the longest pattern, in bytes, that Compile accepts.
const MaxPatternLen = 512

// MaxLine is the longest line of output, in bytes, that a Reader examines;
// a longer one is ignored (gantryd still logs it). Matching costs the same
// per byte whatever the length (BenchmarkReaderWorstCase), so the bound
// is there for memory, and is long enough for the progress lines that
// Keras draws with '\r' through a whole epoch.
const MaxLine = 64 << 10

// number is what the value text must be, once spaces and a trailing '%' are
// gone. It is stricter than strconv.ParseFloat, which also takes hexadecimal
// and underscores, so that every pattern reads numbers the same way.
var number = regexp.MustCompile(`^[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|inf|infinity))$`)

// csi is a terminal escape sequence such as a colour change, which a program
// that colours its output puts between the word and its number.
var csi = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]`)

// defaultPattern is DefaultPattern compiled. The regexp cannot match
// without the word, and "accuracy" has no letter that Unicode folds to a
// non-ASCII one (as it does k and s), so an ASCII case-insensitive search for
// the word first is exact, and much faster on long lines.
var defaultPattern = func() *Pattern {
	p, err := compile(DefaultPattern)
	if err != nil {
		panic(err)
	}
	p.word = "accuracy"
	return p
}()

// Pattern is a compiled metric pattern: which lines of a training program's
// output report its accuracy, and where in the line the number is.
type Pattern struct {
	src string
	re  *regexp.Regexp
	// group is the index of the submatch holding the value: 1 when the
	// pattern has a capture group, 0 (the whole match) when it has none.
	group int
	// word is a literal the line must hold (in ASCII case-insensitive
	// form) for the pattern to have any chance; it saves running the
	// regexp over long lines that cannot match. Empty for user patterns.
	word string
}

// Compile compiles a metric pattern. The empty pattern means DefaultPattern.
// In a user's pattern, the first capture group, or the whole match when there
// is none, is the value. Compile returns an error of kind gantry.ErrInvalid
// when the pattern is longer than MaxPatternLen, does not compile, has more
// than one capture group, or matches the empty string (it would then match
// every line).
//
// Go's regexp is RE2: matching takes time linear in the line's length
// whatever the pattern, so a user's pattern needs no timeout. But the factor
// grows with the pattern, so Compile also refuses, with ErrInvalid, a
// pattern that repeats more than 16 times ({17}) or whose matching may cost
// more per byte than DefaultPattern's (see cost.go).
func Compile(pattern string) (*Pattern, error) {
	if pattern == "" {
		return defaultPattern, nil
	}
	return compile(pattern)
}

func compile(pattern string) (*Pattern, error) {
	if len(pattern) > MaxPatternLen {
		return nil, gantry.Errorf(gantry.ErrInvalid, "metric pattern is %d bytes long; at most %d are allowed", len(pattern), MaxPatternLen)
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "metric pattern does not compile: %v", err)
	}
	if err := checkCost(pattern); err != nil {
		return nil, err
	}
	if n := re.NumSubexp(); n > 1 {
		return nil, gantry.Errorf(gantry.ErrInvalid, "metric pattern has %d capture groups; it may have at most one, around the number (write (?:...) for a group that captures nothing)", n)
	}
	if re.MatchString("") {
		return nil, gantry.Errorf(gantry.ErrInvalid, "metric pattern matches the empty string, so it would match every line; make it require the number")
	}
	return &Pattern{src: pattern, re: re, group: re.NumSubexp()}, nil
}

// String returns the pattern's source text.
func (p *Pattern) String() string { return p.src }

// parse reads the value text line[start:end] as an accuracy normalised to
// [0,1]. A '%' at the end of the text, or right after it (spaces between
// allowed), makes it a percentage. It returns why the value is not an
// accuracy, or "" when it is one. start is -1 when the group took no part in
// the match.
func parse(line string, start, end int) (value float64, bad string) {
	if start < 0 {
		return 0, "the pattern's capture group matched nothing"
	}
	text := strings.TrimSpace(line[start:end])
	percent := false
	if t, ok := strings.CutSuffix(text, "%"); ok {
		text, percent = strings.TrimSpace(t), true
	} else if strings.HasPrefix(strings.TrimLeft(line[end:], " \t"), "%") {
		percent = true
	}
	v, bad := readNumber(text)
	if bad != "" {
		return 0, bad
	}
	text = short(text)
	switch {
	case percent && (v < 0 || v > 100):
		return 0, fmt.Sprintf("%s%% is outside [0%%,100%%]", text)
	case !percent && (v < 0 || v > 1):
		return 0, fmt.Sprintf("%s is outside [0,1]", text)
	}
	if percent {
		v /= 100
	}
	return v + 0, "" // + 0 turns -0 into 0
}

// readNumber reads text (spaces trimmed) as a finite number. It returns why
// it is not one, or "" when it is.
func readNumber(text string) (float64, string) {
	if text == "" {
		return 0, "it holds no number"
	}
	if !number.MatchString(text) {
		return 0, excerpt(text, 0) + " is not a number"
	}
	v, err := strconv.ParseFloat(text, 64)
	text = short(text)
	// A value too large for a float64 comes back as ±Inf with ErrRange and
	// is refused below; one too small rounds to 0, as it should.
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Sprintf("%s is not a number", text)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Sprintf("%s is not a finite number", text)
	}
	return v + 0, ""
}

// maxQuote is how much of a line an error message quotes.
const maxQuote = 120

// excerpt quotes s, or, when s is long, maxQuote bytes of it from about at,
// with "..." where it was cut.
func excerpt(s string, at int) string {
	if len(s) <= maxQuote {
		return strconv.Quote(s)
	}
	lo := min(max(at-20, 0), len(s)-maxQuote)
	hi := lo + maxQuote
	// Cut between characters, where there are characters: binary junk
	// may have no place to cut but mid-"rune", and is quoted as bytes then.
	for i := 1; i < utf8.UTFMax && lo > 0 && lo < hi && !utf8.RuneStart(s[lo]); i++ {
		lo++
	}
	for i := 1; i < utf8.UTFMax && hi < len(s) && hi > lo && !utf8.RuneStart(s[hi]); i++ {
		hi--
	}
	q := strconv.Quote(s[lo:hi])
	if lo > 0 {
		q = "..." + q
	}
	if hi < len(s) {
		q += "..."
	}
	return q
}

// short cuts a number's text (ASCII, by then) for an error message.
func short(s string) string {
	if len(s) <= 40 {
		return s
	}
	return s[:37] + "..."
}

// containsFoldASCII reports whether s holds word, ASCII letters compared
// without case. word must be lower-case ASCII.
func containsFoldASCII(s, word string) bool {
	for i := 0; i+len(word) <= len(s); i++ {
		j := 0
		for j < len(word) && lowerASCII(s[i+j]) == word[j] {
			j++
		}
		if j == len(word) {
			return true
		}
	}
	return false
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// compileNamed compiles a named metric's pattern: like Compile, but the
// pattern must have exactly one capture group, the value, and the name may
// not be accuracy's, whose pattern is MetricRegex. It returns ErrInvalid.
func compileNamed(m gantry.MetricPattern) (*Pattern, error) {
	if m.Name == "accuracy" {
		return nil, gantry.Errorf(gantry.ErrInvalid, "metric accuracy: the accuracy's pattern is --metric-regex (metric_regex); give this metric another name")
	}
	if m.Regex == "" {
		return nil, gantry.Errorf(gantry.ErrInvalid, "metric %s: give the regex, like '%s: ([0-9.]+)'", m.Name, m.Name)
	}
	p, err := compile(m.Regex)
	if err != nil {
		return nil, gantry.Errorf(gantry.ErrInvalid, "metric %s: %v", m.Name, err)
	}
	if p.group != 1 {
		return nil, gantry.Errorf(gantry.ErrInvalid, "metric %s: pattern %q has no capture group; put one around the number, like '%s: ([0-9.]+)'", m.Name, m.Regex, m.Name)
	}
	return p, nil
}

// CheckSpec validates a job's spec whole: Spec.Validate, then the accuracy
// pattern and the named metrics' patterns against this contract's bounds
// (Compile; a named metric's pattern must have exactly one capture group).
// It returns ErrInvalid, naming the field at fault.
func CheckSpec(s *gantry.Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.MetricRegex != "" {
		if _, err := Compile(s.MetricRegex); err != nil {
			return gantry.Errorf(gantry.ErrInvalid, "metric_regex %q: %v", s.MetricRegex, err)
		}
	}
	for _, m := range s.Metrics {
		if _, err := compileNamed(m); err != nil {
			return err
		}
	}
	return nil
}
