package main

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gantry-ml/gantry"
)

func TestEscape(t *testing.T) {
	tests := []struct {
		name, in string
		newline  bool
		want     string
	}{
		{"plain text", "Model accuracy: 0.9667", false, "Model accuracy: 0.9667"},
		{"tab passes", "a\tb", false, "a\tb"},
		{"newline passes when kept", "a\nb", true, "a\nb"},
		{"newline escaped in a value", "a\nb", false, `a\x0ab`},
		{"ESC of a colour", "\x1b[31mred\x1b[0m", true, `\x1b[31mred\x1b[0m`},
		{"OSC 52 clipboard write", "\x1b]52;c;ZXZpbA==\x07", true, `\x1b]52;c;ZXZpbA==\x07`},
		{"title change, ST-terminated", "\x1b]0;pwned\x1b\\", true, `\x1b]0;pwned\x1b\`},
		{"cursor moves", "\x1b[2J\x1b[H", true, `\x1b[2J\x1b[H`},
		{"carriage return and backspace", "ok\r\bno", true, `ok\x0d\x08no`},
		{"NUL, record separator, DEL", "\x00\x1e\x7f", true, `\x00\x1e\x7f`},
		{"C1 CSI and OSC, as UTF-8", "\u009b2J\u009d0;t\u009c", true, `\u009b2J\u009d0;t\u009c`},
		{"raw C1 bytes are not UTF-8", "\x9b2J", true, `\x9b2J`},
		{"invalid UTF-8", "a\xff\xc3(b", true, `a\xff\xc3(b`},
		{"a cut UTF-8 sequence", "\xe2\x82", true, `\xe2\x82`},
		{"UTF-8 text passes", "précision: 0,97 ✓ 日本", true, "précision: 0,97 ✓ 日本"},
		{"U+FFFD itself passes", "\uFFFD", true, "\uFFFD"},
		{"the escape text a trainer prints stays as it is", `\x1b`, true, `\x1b`},
	}
	for _, tt := range tests {
		got := string(appendEscaped(nil, []byte(tt.in), tt.newline))
		if got != tt.want {
			t.Errorf("%s: appendEscaped(%q, newline %v)\n got %q\nwant %q", tt.name, tt.in, tt.newline, got, tt.want)
		}
		control := func(r rune) bool { return r < 0x20 && r != '\t' && r != '\n' || r >= 0x7f && r <= 0x9f }
		if strings.IndexFunc(got, control) >= 0 || !utf8.ValidString(got) {
			t.Errorf("%s: %q still holds a control character or a byte that is not UTF-8", tt.name, got)
		}
	}
}

// A log goes out as it is (raw), with gantryd's marks taken out (plain),
// or escaped with gantryd's lines dimmed (terminal), however the stream
// is cut into writes.
func TestLogWriter(t *testing.T) {
	const log = "\x1e==> training in container abc\n" +
		"\x1b]52;c;ZXZpbA==\x07clip\n" +
		`\x1e==> succeeded` + "\n" +
		"==> succeeded\n" +
		"étape ✓\r\n" +
		"\x1e==> succeeded\n" +
		"no newline \xe2\x9c"
	tests := []struct {
		mode logMode
		want string
	}{
		{logRaw, log},
		{logPlain, strings.ReplaceAll(log, "\x1e", "")},
		{logTerm, dim + "==> training in container abc" + reset + "\n" +
			`\x1b]52;c;ZXZpbA==\x07clip` + "\n" +
			`\x1e==> succeeded` + "\n" +
			"==> succeeded\n" +
			`étape ✓\x0d` + "\n" +
			dim + "==> succeeded" + reset + "\n" +
			`no newline \xe2\x9c`},
	}
	for _, tt := range tests {
		for _, chunk := range []int{len(log), 1, 2, 3, 7} {
			var buf bytes.Buffer
			lw := newLogWriter(&buf, tt.mode)
			for rest := log; len(rest) > 0; {
				n := min(chunk, len(rest))
				if k, err := lw.Write([]byte(rest[:n])); k != n || err != nil {
					t.Fatalf("Write = %d, %v; want %d, nil", k, err, n)
				}
				rest = rest[n:]
			}
			if err := lw.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if buf.String() != tt.want {
				t.Errorf("mode %d, writes of %d bytes:\n got %q\nwant %q", tt.mode, chunk, buf.String(), tt.want)
			}
		}
	}
}

// What gantry diff and gantry watch (every job) show of a job's values is
// escaped on a terminal: a build arg or an error cannot draw or add lines.
func TestJobValuesEscaped(t *testing.T) {
	a := &gantry.Job{ID: "a", Spec: gantry.Spec{Build: gantry.BuildSpec{BuildArgs: map[string]string{"X": "1"}}}}
	b := &gantry.Job{ID: "b", Spec: gantry.Spec{Build: gantry.BuildSpec{BuildArgs: map[string]string{"X": "\x1b]0;t\x07\naccuracy: 0.1 -> 0.99"}}},
		Inputs: gantry.Inputs{Files: map[string]string{"\x1b[2Jf": "sha256:1"}}}
	var out bytes.Buffer
	diffJobs(&out, a, b, escape)
	want := "--- a\n+++ b\n" +
		`context: + \x1b[2Jf` + "\n" +
		`build arg: ~ X: 1 -> \x1b]0;t\x07\x0aaccuracy: 0.1 -> 0.99` + "\n"
	if out.String() != want {
		t.Errorf("diff\n got %q\nwant %q", out.String(), want)
	}

	el := &eventLines{text: escape}
	l := el.line(gantry.Event{Job: "a", Type: gantry.EventState, State: gantry.StateFailed, Error: "build failed: \x1b[31mboom\x1b[0m"})
	if strings.ContainsRune(l, 0x1b) || !strings.Contains(l, `\x1b[31mboom`) {
		t.Errorf("event line %q, want the error escaped", l)
	}
}
