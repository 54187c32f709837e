package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/weftmesh/weft/internal/demo"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: weft demo [flags]\n\n"+
			"Starts weft server on a temporary store, creates the tutorial's color mesh,\n"+
			"starts the color apps behind weft proxies and shows the router's traffic split\n"+
			"live. As root, each task is a network namespace behind iptables interception;\n"+
			"otherwise everything runs on loopback. It prints the API's address and the\n"+
			"aws appmesh update-route command that changes the weights while it runs.\n"+
			"Ctrl-C, SIGTERM, SIGHUP, SIGPIPE or its parent's exit stop it and remove\n"+
			"everything it started; a demo that was killed outright is cleaned up by the\n"+
			"next one.\n\nflags:")
		fs.PrintDefaults()
	}
	// Every way a demo is told to stop ends in the same clean-up: Ctrl-C
	// and SIGTERM (main), a closed terminal (SIGHUP), a closed pipe
	// (SIGPIPE: `weft demo | head`; noticed, writes then fail with EPIPE
	// instead of killing the process), and its parent's death (the demo
	// asks the kernel for SIGTERM then).
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP, syscall.SIGPIPE)
	defer stop()
	var opt demo.Options
	fs.StringVar(&opt.Layout, "layout", demo.LayoutAuto, "auto (netns as root, else loopback), netns or loopback")
	fs.DurationVar(&opt.Duration, "duration", 0, "stop after this long (0: at Ctrl-C)")
	fs.IntVar(&opt.Rate, "rate", 100, "requests per second")
	verbose := fs.Bool("v", false, "log what the demo starts")
	if err := fs.Parse(args); err != nil {
		return err
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the weft binary: %w", err)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	opt.Binary = bin
	opt.Out = stdout
	opt.TTY = isTerminal(stdout)
	opt.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return demo.Run(ctx, opt)
}

// isTerminal reports whether w is a terminal, where the demo redraws in
// place instead of printing a line a second.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}
