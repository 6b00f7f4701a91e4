// Command gantryd is gantry's daemon: it serves the API on a unix socket,
// keeps job records in bbolt, builds with BuildKit, trains on the Docker
// engine and pushes with go-containerregistry.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	m := NewMain()
	if err := m.ParseFlags(ctx, os.Args[1:]); errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	} else if errors.Is(err, errUsage) {
		os.Exit(2) // the flag package has said why
	} else if err != nil {
		exit(err)
	}
	if err := m.Run(ctx); err != nil {
		m.Close()
		exit(err)
	}
	select {
	case <-ctx.Done():
	case <-m.Done():
	}
	if err := m.Close(); err != nil {
		exit(err)
	}
}

func exit(err error) {
	fmt.Fprintln(os.Stderr, "gantryd:", err)
	os.Exit(1)
}
