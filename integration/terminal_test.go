package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gantry-ml/gantry"
)

// terminalHostile is a trainer that prints what would take over a terminal (an
// OSC 52 clipboard write, a title change, cursor moves), a line dressed as
// gantryd's "==> succeeded", and one led by a raw 0x1E, gantryd's mark.
const terminalHostile = `import sys
out = sys.stdout.buffer
out.write(b"\x1b]52;c;cHduZWQ=\x07\x1b]0;owned\x07\x1b[2J\x1b[H\x1b[5Aclobber\n")
out.write(b"==> succeeded\n")
out.write(b"\x1e==> succeeded\n")
out.write(b"Model accuracy: 0.9667\n")
out.flush()
`

// terminalHostilePrinted is what terminalHostile prints, its 0x1E as gantryd stores it.
const terminalHostilePrinted = "\x1b]52;c;cHduZWQ=\x07\x1b]0;owned\x07\x1b[2J\x1b[H\x1b[5Aclobber\n" +
	"==> succeeded\n" +
	`\x1e==> succeeded` + "\n" +
	"Model accuracy: 0.9667\n"

// gantry logs on a terminal shows a trainer's escape sequences as text
// and its "==> succeeded" unlike gantryd's; --raw gives its bytes.
func TestTerminalEscapesTrainerOutput(t *testing.T) {
	t.Parallel()
	script, err := exec.LookPath("script")
	if err != nil {
		t.Fatalf("util-linux script is needed to give gantry a terminal: %v", err)
	}
	d := startDaemon(t)
	id := d.submit(trainerDir(t, terminalHostile))
	if j := d.waitJob(id, 5*time.Minute); j.State != gantry.StateSucceeded {
		t.Fatalf("job %s (%s), want succeeded", j.State, j.Error)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "-qfec", fmt.Sprintf("'%s' logs %s", filepath.Join(binDir, "gantry"), id), "/dev/null")
	cmd.Env = append(os.Environ(), "GANTRY_HOST=unix://"+d.socket, "TERM=xterm")
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("gantry logs on a terminal: %v\n%q", err, raw)
	}
	tty := strings.ReplaceAll(string(raw), "\r\n", "\n")
	t.Logf("gantry logs on a terminal:\n%q", tty)

	// The only escape sequences are gantry's own dimming; no BEL at all.
	const dim, reset = "\x1b[2m", "\x1b[0m"
	if rest := strings.NewReplacer(dim, "", reset, "").Replace(tty); strings.ContainsAny(rest, "\x1b\x07\x9b\x9d") {
		t.Errorf("the terminal got escape or BEL bytes besides gantry's dimming:\n%q", rest)
	}
	if strings.ContainsRune(tty, 0x1e) {
		t.Errorf("the terminal got gantryd's 0x1E mark")
	}
	wantLines := []string{
		`\x1b]52;c;cHduZWQ=\x07\x1b]0;owned\x07\x1b[2J\x1b[H\x1b[5Aclobber`,
		"==> succeeded",               // the trainer's: not dimmed
		`\x1e==> succeeded`,           // the trainer's raw 0x1E, shown as text
		dim + "==> succeeded" + reset, // gantryd's
	}
	lines := strings.Split(tty, "\n")
	for _, w := range wantLines {
		if n := countLines(lines, w); n != 1 {
			t.Errorf("the terminal shows the line %q %d times, want once", w, n)
		}
	}
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(dim+"==> training in container ")).MatchString(tty) {
		t.Errorf("the terminal does not show gantryd's training line dimmed")
	}

	out, errOut, code := d.gantry("logs", "--raw", id)
	if code != 0 {
		t.Fatalf("gantry logs --raw: exit %d\n%s", code, errOut)
	}
	if !strings.Contains(out, terminalHostilePrinted) {
		t.Errorf("gantry logs --raw does not hold the trainer's bytes as printed\n%q\nin\n%q", terminalHostilePrinted, out)
	}
	if !strings.HasSuffix(out, "\x1e==> succeeded\n") {
		t.Errorf("gantry logs --raw does not end with gantryd's marked line:\n%q", out)
	}
	plain, errOut, code := d.gantry("logs", id)
	if code != 0 {
		t.Fatalf("gantry logs: exit %d\n%s", code, errOut)
	}
	if want := strings.ReplaceAll(out, "\x1e", ""); plain != want {
		t.Errorf("gantry logs piped\n%q\nwant the log without gantryd's marks\n%q", plain, want)
	}
}

func countLines(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if l == s {
			n++
		}
	}
	return n
}
