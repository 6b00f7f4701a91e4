package main

// Webhooks: where gantryd tells of every job's end, how it signs, and what
// a job's own URLs may reach.

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gantry-ml/gantry/daemon"
	"github.com/gantry-ml/gantry/webhook"
)

// urlFlags is a flag that may be given many times; unlike listFlag it does
// not split at commas, which a URL may hold.
type urlFlags []string

func (u *urlFlags) String() string { return strings.Join(*u, " ") }

func (u *urlFlags) Set(v string) error {
	*u = append(*u, strings.TrimSpace(v))
	return nil
}

// webhookFlags are the flags of webhooks.
type webhookFlags struct {
	urls         urlFlags
	secretFile   string
	allowPrivate bool
	backoff      time.Duration
}

func (w *webhookFlags) register(fs *flag.FlagSet) {
	fs.Var(&w.urls, "webhook", "URL told of every job's end with a signed job.ended event, besides the URLs the job names (repeatable; needs --webhook-secret-file)")
	fs.StringVar(&w.secretFile, "webhook-secret-file", "", "file holding the secret webhooks are signed with, whsec_ and the key in base64 (Standard Webhooks); without it gantryd sends no webhook and refuses jobs that name one")
	fs.BoolVar(&w.allowPrivate, "webhook-allow-private", false, "let jobs' webhook URLs reach loopback and private network addresses (link-local ones stay refused)")
	fs.DurationVar(&w.backoff, "webhook-backoff", time.Second, "delay before a webhook's first retry, doubled at each retry up to 10m (for tests)")
}

// check fills c.Webhooks from the flags, reading the secret file.
func (w *webhookFlags) check(c *Config) error {
	if len(w.urls) > 0 && w.secretFile == "" {
		return fmt.Errorf("--webhook needs --webhook-secret-file: gantryd signs every message it sends")
	}
	for _, raw := range w.urls {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("--webhook %q: want an http or https URL with a host, like https://hooks.example/gantry", raw)
		}
	}
	if w.backoff <= 0 {
		return fmt.Errorf("--webhook-backoff %v: must be positive", w.backoff)
	}
	c.Webhooks = daemon.WebhookConfig{URLs: w.urls, Backoff: w.backoff}
	c.Policy.WebhookPrivate = w.allowPrivate
	if w.secretFile == "" {
		return nil
	}
	b, err := os.ReadFile(w.secretFile)
	if err != nil {
		return fmt.Errorf("--webhook-secret-file: %w", err)
	}
	if c.Webhooks.Key, err = webhook.ParseSecret(string(b)); err != nil {
		return fmt.Errorf("--webhook-secret-file %s: %w", w.secretFile, err)
	}
	c.Policy.Webhooks = true
	return nil
}
