package trainer

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry"
)

// defaultCases are lines read alone with the default pattern. want is the
// accuracy, or -1 when the line must not match at all, or -2 when it must
// match and then be refused.
var defaultCases = []struct {
	line string
	want float64
}{
	{"Model accuracy: 0.9667", 0.9667},
	{"accuracy=0.97", 0.97},
	{"Accuracy: 96.67%", 0.9667},
	{"Accuracy: 96.67 %", 0.9667},
	{"accuracy: 100%", 1},
	{"accuracy: 0%", 0},
	{"ACCURACY = 0.5", 0.5},
	{"test accuracy: 0.93", 0.93},
	{"accuracy: 1e-1", 0.1},
	{"accuracy: 1E-1", 0.1},
	{"accuracy: .5", 0.5},
	{"accuracy: 1.", 1},
	{"accuracy: 1", 1},
	{"accuracy: 0", 0},
	{"accuracy: -0", 0},
	{"accuracy: +0.25", 0.25},
	{"Accuracy: 0.95 (test set)", 0.95},
	{"Accuracy:0.95, loss: 0.1", 0.95},
	{"epoch 3 - loss: 0.21 - accuracy: 0.9123", 0.9123},
	{"accuracy : 0.8", 0.8},
	{"accuracy:\t0.8", 0.8},
	{"accuracy: 0.8\r", 0.8},
	{"  \x1b[32maccuracy: 0.8\x1b[0m", 0.8},
	{"\x1b[1;31mAccuracy:\x1b[0m 0.8", 0.8},
	{"\x1b]0;title\x07accuracy: 0.8", 0.8},
	{"\x1b[", -1},
	{"accuracy: nan", -2},
	{"accuracy: NaN", -2},
	{"accuracy: inf", -2},
	{"accuracy: -Infinity", -2},
	{"accuracy: 1e999", -2},
	{"accuracy: 1.5", -2},
	{"accuracy: 1.0001", -2},
	{"accuracy: -0.1", -2},
	{"accuracy: 150%", -2},
	{"accuracy: -1%", -2},
	{"val_accuracy_history saved", -1},
	{"val_accuracy: 0.9", -1},
	{"accuracy improved", -1},
	{"precision: 0.8", -1},
	{"inaccuracy: 0.2", -1},
	{"Accuracy: n/a", -1},
	{"accuracy: nano", -1},
	{"accuracy", -1},
	{"accuracy:", -1},
	{"accuracy 0.9", -1},
	{"", -1},
	{"\x00\xff\xfe accuracy\x00: 0.5", -1},
	{"\xffaccuracy: 0.5\xff", 0.5},
	{"accuracy: \xff0.5", -1},
}

func TestReaderDefault(t *testing.T) {
	p, err := Compile("")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range defaultCases {
		r := p.NewReader()
		r.Line(c.line)
		got, err := r.Accuracy()
		switch {
		case c.want >= 0 && (err != nil || math.Abs(got-c.want) > 1e-12):
			t.Errorf("Line(%q): got %v, %v; want %v", c.line, got, err, c.want)
		case c.want == -1 && (err == nil || !strings.Contains(err.Error(), "no line")):
			t.Errorf("Line(%q): got %v, %v; want no match", c.line, got, err)
		case c.want == -2 && (err == nil || !strings.HasPrefix(err.Error(), "last accuracy line ")):
			t.Errorf("Line(%q): got %v, %v; want the line refused", c.line, got, err)
		}
	}
}

func TestReaderLines(t *testing.T) {
	cases := []struct {
		name    string
		lines   []string
		want    float64
		wantErr string // a part of the error; "" when none
	}{
		{"none", nil, 0, "no line of the training output reported accuracy"},
		{"no match", []string{"Loading data", "Training", "done"}, 0, "no line of the training output reported accuracy"},
		{"one", []string{"Loading data", "Model accuracy: 0.9667", "Saved"}, 0.9667, ""},
		{"last wins", []string{"accuracy: 0.5", "accuracy: 0.7", "accuracy: 0.6"}, 0.6, ""},
		{"last wins over percent", []string{"accuracy: 90%", "accuracy: 0.8"}, 0.8, ""},
		{"later non-matches do not count", []string{"accuracy: 0.7", "Accuracy: n/a", "accuracy improved"}, 0.7, ""},
		{"last invalid", []string{"accuracy: 0.99", "accuracy: 1.5"}, 0, `last accuracy line "accuracy: 1.5": 1.5 is outside [0,1]`},
		{"last nan", []string{"accuracy: 0.99", "accuracy: nan"}, 0, `last accuracy line "accuracy: nan": nan is not a finite number`},
		{"last inf", []string{"accuracy: 0.99", "accuracy: inf"}, 0, "inf is not a finite number"},
		{"last percent out of range", []string{"accuracy: 0.99", "accuracy: 150%"}, 0, "150% is outside [0%,100%]"},
		{"invalid then valid", []string{"accuracy: 1.5", "accuracy: 0.75"}, 0.75, ""},
		{"carriage returns", []string{"accuracy: 0.1\r", "accuracy: 0.2\r\r"}, 0.2, ""},
		{"progress bar", []string{"\r1/3 accuracy: 0.5\r2/3 accuracy: 0.6\r3/3 accuracy: 0.7"}, 0.7, ""},
		{"progress bar ends without", []string{"\r1/3 accuracy: 0.5\r2/3 accuracy: 0.6\rdone"}, 0.6, ""},
		{"progress bar ends invalid", []string{"\raccuracy: 0.5\raccuracy: 2"}, 0, "2 is outside [0,1]"},
		{"binary junk", []string{"accuracy: 0.8", "\x00\x01\x02\xff\xfe\xfd", string([]byte{0xc3, 0x28, 0xa0, 0xa1})}, 0.8, ""},
		{"long line", []string{strings.Repeat("x", MaxLine/2-20) + " accuracy: 0.42 " + strings.Repeat("y", MaxLine/2-20)}, 0.42, ""},
		{"long invalid line", []string{strings.Repeat("x", MaxLine-12) + " accuracy: 7"}, 0, `xxxxxxxx accuracy: 7": 7 is outside [0,1]`},
		{"line over MaxLine is ignored", []string{"accuracy: 0.5", strings.Repeat("x", MaxLine-12) + " accuracy: 0.7"}, 0.5, ""},
		{"long binary junk", []string{strings.Repeat("\x80", 300) + " accuracy: 2 " + strings.Repeat("\x80", 300)}, 0, `accuracy: 2 \x80`},
		{"long multibyte", []string{strings.Repeat("é", 300) + " accuracy: 2 " + strings.Repeat("€", 300)}, 0, `é accuracy: 2 €`},
		{"colours", []string{"\x1b[1mAccuracy\x1b[0m: \x1b[32m0.93\x1b[0m"}, 0.93, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := defaultPattern.NewReader()
			for _, l := range c.lines {
				r.Line(l)
			}
			got, err := r.Accuracy()
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, %v; want error containing %q", got, err, c.wantErr)
				}
				if len(err.Error()) > 600 {
					t.Errorf("error is %d bytes long; want it to quote only part of a long line", len(err.Error()))
				}
				if gantry.Kind(err) != nil {
					t.Errorf("error %q is of kind %v; want none", err, gantry.Kind(err))
				}
				return
			}
			if err != nil || math.Abs(got-c.want) > 1e-12 {
				t.Fatalf("got %v, %v; want %v", got, err, c.want)
			}
		})
	}
}

func TestExcerpt(t *testing.T) {
	for _, s := range []string{
		"short",
		strings.Repeat("\x80", 300),
		strings.Repeat("€", 100),
		strings.Repeat("x", 50) + strings.Repeat("\xe2\x82", 100),
	} {
		for at := 0; at <= len(s); at++ {
			q := excerpt(s, at)
			if len(q) > 4*maxQuote+8 {
				t.Fatalf("excerpt(%.20q..., %d) is %d bytes long", s, at, len(q))
			}
		}
	}
	q := excerpt(strings.Repeat("€", 100), 150)
	if strings.ContainsRune(q, '\\') {
		t.Errorf("excerpt of whole characters cut one: %s", q)
	}
}

func TestZeroReader(t *testing.T) {
	var r Reader
	r.Line("Accuracy: 50%")
	if got, err := r.Accuracy(); err != nil || got != 0.5 {
		t.Errorf("got %v, %v; want 0.5", got, err)
	}
}

func TestUserPattern(t *testing.T) {
	cases := []struct {
		pattern string
		lines   []string
		want    float64
		wantErr string
	}{
		{`acc=(\S+)`, []string{"acc=0.91"}, 0.91, ""},
		{`acc=(\S+)`, []string{"acc=91%"}, 0.91, ""},
		{`acc=([\d.]+)`, []string{"acc=91 %"}, 0.91, ""},
		{`acc=([\d.]+)%`, []string{"acc=91%"}, 0.91, ""},
		{`acc=(\S+)`, []string{"acc=0.91", "acc=n/a"}, 0, `"n/a" is not a number`},
		{`acc=(\S+)`, []string{"acc=0.91", "acc=0x1p-1"}, 0, `"0x1p-1" is not a number`},
		{`acc=(\S+)`, []string{"acc=0.9", "ACC=0.8"}, 0.9, ""},
		{`(?i)acc=(\S+)`, []string{"acc=0.9", "ACC=0.8"}, 0.8, ""},
		{`score (\d\.\d+)`, []string{"f1 score 0.77 on 30 samples"}, 0.77, ""},
		{`acc(?:uracy)?=(\d\.\d+)?`, []string{"acc=0.5", "acc="}, 0, "capture group matched nothing"},
		{`0\.\d+`, []string{"loss went to 0.31", "final 0.88 here"}, 0.88, ""},
		{`\d+(?:\.\d+)?`, []string{"top-1: 87.5%"}, 1, ""}, // the whole match is the first one: "1" of "top-1"
		{`\d+\.\d+`, []string{"top-1: 87.5%"}, 0.875, ""},
		{`final: (\d+\.\d+)`, []string{"accuracy: 0.9"}, 0, "no line of the training output reported accuracy"},
		{`final: (\d+)`, []string{"final: 2"}, 0, "2 is outside [0,1]"},
	}
	for _, c := range cases {
		p, err := Compile(c.pattern)
		if err != nil {
			t.Errorf("Compile(%q): %v", c.pattern, err)
			continue
		}
		if p.String() != c.pattern {
			t.Errorf("Compile(%q).String() = %q", c.pattern, p.String())
		}
		r := p.NewReader()
		for _, l := range c.lines {
			r.Line(l)
		}
		got, err := r.Accuracy()
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q on %q: got %v, %v; want error containing %q", c.pattern, c.lines, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || math.Abs(got-c.want) > 1e-12 {
			t.Errorf("%q on %q: got %v, %v; want %v", c.pattern, c.lines, got, err, c.want)
		}
	}
}

func TestCompile(t *testing.T) {
	p, err := Compile("")
	if err != nil {
		t.Fatalf(`Compile(""): %v`, err)
	}
	if p.String() != DefaultPattern {
		t.Errorf(`Compile("").String() = %q; want DefaultPattern`, p.String())
	}
	if _, err := Compile(DefaultPattern); err != nil {
		t.Errorf("Compile(DefaultPattern): %v", err)
	}
	if _, err := Compile("[" + strings.Repeat("a", MaxPatternLen-2) + "]"); err != nil {
		t.Errorf("Compile of MaxPatternLen bytes: %v", err)
	}
	bad := []struct {
		pattern string
		wantMsg string
	}{
		{strings.Repeat("a", MaxPatternLen+1), "513 bytes long; at most 512"},
		{`acc=(\d+`, "does not compile"},
		{`acc=[`, "does not compile"},
		{`(?P<x>a)(?P<y>b)`, "2 capture groups"},
		{`acc(uracy)?=(\d+)`, "2 capture groups"},
		{`((\d+))`, "2 capture groups"},
		{`\d*`, "matches the empty string"},
		{`acc=(\d+)|`, "matches the empty string"},
	}
	for _, c := range bad {
		p, err := Compile(c.pattern)
		if err == nil {
			t.Errorf("Compile(%.40q) = %v; want an error", c.pattern, p)
			continue
		}
		if !errors.Is(err, gantry.ErrInvalid) {
			t.Errorf("Compile(%.40q): error %q is not ErrInvalid", c.pattern, err)
		}
		if !strings.Contains(err.Error(), c.wantMsg) {
			t.Errorf("Compile(%.40q): got %q; want it to say %q", c.pattern, err, c.wantMsg)
		}
	}
}

// TestCompileBoundsCost checks which patterns are cheap enough to run over
// every line of a job's output.
func TestCompileBoundsCost(t *testing.T) {
	cases := []struct {
		pattern string
		ok      bool
	}{
		{DefaultPattern, true},
		{`val_acc=([0-9.]+)`, true},
		{`accuracy[:=]\s*([0-9.]+)`, true},
		{`(?i)accuracy[:=]\s*(\S+)`, true},
		{`(?i)acc\w*[:=]\s*(\S+)`, false}, // 12 MB/s at worst: under the 10 MB/s floor's margin
		{`(?i)score\s*(.*)`, true},
		{`top-1: (\d{1,3}(?:\.\d+)?)%`, true},
		{`\d{1,4}`, true},
		{`\d{1,16}`, false},
		{`[a-y]{6}z`, true},
		{`[a-y]{7}z`, false},
		{`\p{L}`, true},
		{"[" + strings.Repeat("a", MaxPatternLen-2) + "]", true},
		// The attack: 38 bytes, 14 KB/s.
		{`(?:[\p{L}\p{N}\p{S}\p{P}\p{Z}]{1000}z)`, false},
		{`a{17}`, false},
		{`(?:a{16}){16}`, false},
		{`\d{1,17}`, false},
		{`[a-y]{16}z`, false},
		{`.{16}z`, false},
		{`(?i:a{16}z)`, false},
		{`[\p{L}\p{N}\p{S}\p{P}\p{Z}]{8}z`, false},
		{strings.Repeat("a", MaxPatternLen), false},
		{strings.Repeat(`\w?`, 40) + "z", false},
	}
	for _, c := range cases {
		_, err := Compile(c.pattern)
		if (err == nil) != c.ok {
			t.Errorf("Compile(%.60q) error = %v; want ok=%v", c.pattern, err, c.ok)
			continue
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, gantry.ErrInvalid) {
			t.Errorf("Compile(%.60q): error %q is not ErrInvalid", c.pattern, err)
		}
		if !strings.Contains(err.Error(), "too costly") || !strings.Contains(err.Error(), "simplify") {
			t.Errorf("Compile(%.60q): got %q; want it to say the pattern is too costly and how to simplify it", c.pattern, err)
		}
	}
}

func FuzzReader(f *testing.F) {
	for _, c := range defaultCases {
		f.Add(c.line)
	}
	f.Add("accuracy: 0.5\raccuracy: 150%\r")
	f.Add(strings.Repeat("\x80", 200) + "accuracy: 2" + strings.Repeat("\xe2\x82", 200))
	f.Add("accuracy=" + strings.Repeat("9", 400) + "e-400")
	f.Fuzz(func(t *testing.T, line string) {
		var r Reader
		r.Line(line)
		got, err := r.Accuracy()
		if err != nil {
			return
		}
		if math.IsNaN(got) || got < 0 || got > 1 {
			t.Errorf("Line(%q): accuracy %v, outside [0,1]", line, got)
		}
		if math.Signbit(got) {
			t.Errorf("Line(%q): accuracy -0", line)
		}
	})
}

func BenchmarkLineLong(b *testing.B) {
	line := strings.Repeat("x", MaxLine)
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		var r Reader
		r.Line(line)
	}
}

func BenchmarkLineLongUser(b *testing.B) {
	p, err := Compile(`(?i)acc\w*[:=]\s*(\S+)`)
	if err != nil {
		b.Fatal(err)
	}
	line := strings.Repeat("x", MaxLine)
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		p.NewReader().Line(line)
	}
}

// FuzzPattern feeds user patterns and lines: whatever compiles must read
// without panicking, and an accuracy it returns is in [0,1].
func FuzzPattern(f *testing.F) {
	f.Add(`acc=(\S+)`, "acc=91%")
	f.Add(`\d+\.\d+`, "top-1: 87.5%")
	f.Add(`acc(?:uracy)?=(\d\.\d+)?`, "acc=")
	f.Add(`(?i)score\s*(.*)`, "SCORE   0.5 %")
	f.Fuzz(func(t *testing.T, pattern, line string) {
		p, err := Compile(pattern)
		if err != nil {
			if !errors.Is(err, gantry.ErrInvalid) {
				t.Fatalf("Compile(%q): error %q is not ErrInvalid", pattern, err)
			}
			return
		}
		r := p.NewReader()
		r.Line(line)
		got, err := r.Accuracy()
		if err == nil && (math.IsNaN(got) || got < 0 || got > 1) {
			t.Errorf("%q on %q: accuracy %v, outside [0,1]", pattern, line, got)
		}
	})
}
