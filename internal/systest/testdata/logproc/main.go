// Command logproc is the process the systest tests start: it logs as the
// CortexOS binaries do (slog text on stderr, plain messages, the component
// in an attribute), says "ready" on stdout, and on
// SIGINT or SIGTERM logs which it got and exits (0 for SIGINT, 3 for
// SIGTERM). With -exit N it exits with N at once, logging nothing.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	exit := flag.Int("exit", -1, "exit at once with this code")
	flag.Parse()
	if *exit >= 0 {
		os.Exit(*exit)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "logproc")
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	log.Info("started", "pid", os.Getpid(), "greeting", os.Getenv("GREETING"), "nats_url", os.Getenv("NATS_URL"))
	fmt.Println("ready")
	sig := <-sigs
	log.Info("stopped", "signal", sig.String())
	if sig == syscall.SIGTERM {
		os.Exit(3)
	}
}
