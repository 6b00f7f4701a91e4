package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-ml/gantry/webhook"
)

func TestParseFlagsWebhooks(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	key := []byte("0123456789abcdef0123456789abcdef")
	if err := os.WriteFile(good, []byte(webhook.FormatSecret(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		say  string // "" for none
	}{
		{[]string{"--webhook", "https://hooks.example/a"}, "needs --webhook-secret-file"},
		{[]string{"--webhook", "ftp://hooks.example/a", "--webhook-secret-file", good}, "want an http or https URL"},
		{[]string{"--webhook-secret-file", bad}, "whsec_"},
		{[]string{"--webhook-secret-file", filepath.Join(dir, "none")}, "--webhook-secret-file"},
		{[]string{"--webhook-backoff", "0s"}, "must be positive"},
		{[]string{"--webhook", "https://hooks.example/a?x=1,2", "--webhook", "http://127.0.0.1:9/b", "--webhook-secret-file", good, "--webhook-allow-private"}, ""},
	} {
		m := NewMain()
		err := m.ParseFlags(context.Background(), tc.args)
		if tc.say == "" {
			if err != nil {
				t.Errorf("ParseFlags(%q): %v", tc.args, err)
				continue
			}
			c := m.Config
			if len(c.Webhooks.URLs) != 2 || c.Webhooks.URLs[0] != "https://hooks.example/a?x=1,2" || string(c.Webhooks.Key) != string(key) ||
				!c.Policy.Webhooks || !c.Policy.WebhookPrivate {
				t.Errorf("ParseFlags(%q): webhooks %+v, policy webhooks %v, private %v", tc.args, c.Webhooks, c.Policy.Webhooks, c.Policy.WebhookPrivate)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("ParseFlags(%q): %v; want an error saying %q", tc.args, err, tc.say)
		}
	}
}
