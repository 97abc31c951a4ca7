package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sluice-dev/sluice/pkg/throttle"
	"github.com/sluice-dev/sluice/services/platform/envconfig"
)

// Exit codes, documented in README.md. Scripts branch on them, so they never change
// meaning.
const (
	exitOK       = 0
	exitError    = 1 // the command ran and failed: broker, registry, topic, input file
	exitUsage    = 2 // bad command line or configuration: nothing was contacted
	exitNotFound = 3 // get: the customer has no active throttle
	exitShort    = 4 // audit: a settled bucket is short
)

// errNotFound is returned by commands that looked something up and found nothing.
var errNotFound = errors.New("not found")

// usageError is a mistake on the command line; it exits with exitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// config is throttlectl's configuration: the services' connection and log settings, read
// from the same environment variables, and the deadline of a command.
type config struct {
	envconfig.Connection
	envconfig.Log
	envconfig.Audit
	// Timeout bounds a whole command (for watch: reaching the broker and catching up).
	Timeout time.Duration `env:"THROTTLECTL_TIMEOUT" envDefault:"30s"`
}

// action runs a command once its flags are parsed; args are its positional arguments.
type action func(ctx context.Context, s *session, args []string) error

// command is one subcommand. define registers the command's own flags on fs and returns
// the action that reads them.
type command struct {
	name    string
	args    string // positional arguments, for the usage line
	nargs   int    // how many positional arguments it takes
	flags   string // required flags, for the usage line
	summary string
	help    string
	output  bool // takes --output text|json
	follow  bool // runs until interrupted: --timeout bounds only its start
	offline bool // contacts nothing: takes no connection flags, reads no environment
	define  func(fs *flag.FlagSet) action
}

func commands() []*command {
	return []*command{
		listCommand(), getCommand(), setCommand(), liftCommand(),
		dumpCommand(), restoreCommand(), watchCommand(), ensureTopicCommand(),
		auditCommand(), versionCommand(),
	}
}

func findCommand(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// run is the whole program: main only adds the process around it, so tests call it
// in-process with buffers. It returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// Table observers and loggers write from several goroutines.
	if stdout == stderr {
		w := &syncWriter{w: stdout}
		stdout, stderr = w, w
	} else {
		stdout, stderr = &syncWriter{w: stdout}, &syncWriter{w: stderr}
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage())
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		fmt.Fprint(stdout, mainUsage())
		return exitOK
	case "help":
		if len(args) == 1 {
			fmt.Fprint(stdout, mainUsage())
			return exitOK
		}
		c := findCommand(args[1])
		if c == nil {
			fmt.Fprintf(stderr, "throttlectl: unknown command %q\n\n%s", args[1], mainUsage())
			return exitUsage
		}
		return c.execute(ctx, []string{"--help"}, stdin, stdout, stderr)
	}
	c := findCommand(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "throttlectl: unknown command %q\n\n%s", args[0], mainUsage())
		return exitUsage
	}
	return c.execute(ctx, args[1:], stdin, stdout, stderr)
}

// globalFlags are the flags every command takes; they override the environment.
type globalFlags struct {
	brokers  string
	registry string
	topic    string
	timeout  time.Duration
	output   string
}

func (g *globalFlags) register(fs *flag.FlagSet, output, connect bool) {
	if output {
		fs.StringVar(&g.output, "output", "text", "output format: text or json")
	}
	if !connect {
		return
	}
	fs.StringVar(&g.brokers, "brokers", "", "Kafka brokers, comma-separated (default $KAFKA_BROKERS or 127.0.0.1:9092)")
	fs.StringVar(&g.registry, "registry", "", "Schema Registry URL (default $SCHEMA_REGISTRY_URL or http://127.0.0.1:8081)")
	fs.StringVar(&g.topic, "topic", "", "throttle topic (default $THROTTLE_TOPIC or "+throttle.DefaultTopic+")")
	fs.DurationVar(&g.timeout, "timeout", 0, "deadline of the command (default $THROTTLECTL_TIMEOUT or 30s)")
}

func (c *command) execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("throttlectl "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and help are printed below, each to its stream
	var g globalFlags
	g.register(fs, c.output, !c.offline)
	act := c.define(fs)

	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c.printHelp(stdout, fs)
		return exitOK
	}
	if err != nil {
		err = dashed(err)
	} else {
		err = c.checkArgs(pos, &g)
	}
	if err != nil {
		return c.usageFailure(stderr, err)
	}
	if c.offline {
		s := &session{stdin: stdin, stdout: stdout, stderr: stderr, log: zap.NewNop(), json: g.output == "json", now: time.Now}
		return c.exit(ctx, stderr, act(ctx, s, pos))
	}

	var cfg config
	if err := envconfig.Load(&cfg); err != nil {
		fmt.Fprintf(stderr, "throttlectl %s: %v\n", c.name, err)
		return exitUsage
	}
	if err := g.apply(fs, &cfg); err != nil {
		return c.usageFailure(stderr, err)
	}
	// A command's stderr is read by a person: warnings only, readable, unless the
	// environment asks for the services' settings.
	if _, ok := os.LookupEnv("LOG_LEVEL"); !ok {
		cfg.Level = "warn"
	}
	if _, ok := os.LookupEnv("LOG_FORMAT"); !ok {
		cfg.Format = "console"
	}
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "throttlectl %s: %v\n", c.name, err)
		return exitUsage
	}
	defer func() { _ = log.Sync() }()

	parent := ctx
	s := &session{cfg: cfg, stdin: stdin, stdout: stdout, stderr: stderr, log: log, json: g.output == "json", now: time.Now}
	if !c.follow {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	return c.exit(parent, stderr, act(ctx, s, pos))
}

// exit reports the error of a command's action and returns its exit code; ctx is the
// command's context before its deadline was added (ended: interrupted).
func (c *command) exit(ctx context.Context, stderr io.Writer, err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case ctx.Err() != nil && !c.follow:
		// Ctrl-C: whatever failed then failed because of it.
		fmt.Fprintf(stderr, "throttlectl %s: interrupted: %v\n", c.name, err)
		return exitError
	case errors.As(err, &ue):
		return c.usageFailure(stderr, err)
	case errors.Is(err, errNotFound):
		fmt.Fprintf(stderr, "throttlectl %s: %v\n", c.name, err)
		return exitNotFound
	case errors.Is(err, errShort):
		fmt.Fprintf(stderr, "throttlectl %s: %v\n", c.name, err)
		return exitShort
	default:
		fmt.Fprintf(stderr, "throttlectl %s: %v\n", c.name, err)
		return exitError
	}
}

func (c *command) checkArgs(pos []string, g *globalFlags) error {
	if len(pos) != c.nargs {
		switch {
		case c.nargs == 0:
			return usagef("unexpected arguments %q", pos)
		case len(pos) < c.nargs:
			return usagef("missing %s", c.args)
		default:
			return usagef("too many arguments: want %s, got %q", c.args, pos)
		}
	}
	if c.output && g.output != "text" && g.output != "json" {
		return usagef("--output %q: want text or json", g.output)
	}
	return nil
}

// apply overrides the environment with the flags that were given.
func (g *globalFlags) apply(fs *flag.FlagSet, cfg *config) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "brokers":
			var bs []string
			for _, b := range strings.Split(g.brokers, ",") {
				if b = strings.TrimSpace(b); b != "" {
					bs = append(bs, b)
				}
			}
			if len(bs) == 0 {
				err = usagef("--brokers is empty")
			}
			cfg.Brokers = bs
		case "registry":
			cfg.RegistryURL = g.registry
		case "topic":
			cfg.ThrottleTopic = g.topic
		case "timeout":
			cfg.Timeout = g.timeout
		}
	})
	if err != nil {
		return err
	}
	switch {
	case cfg.Timeout <= 0:
		return usagef("timeout %s: want a positive duration", cfg.Timeout)
	case cfg.ThrottleTopic == "":
		return usagef("topic is empty")
	case cfg.RegistryURL == "":
		return usagef("registry URL is empty")
	case len(cfg.Brokers) == 0:
		return usagef("no brokers")
	}
	return nil
}

func (c *command) usageFailure(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "throttlectl %s: %v\nusage: %s\nRun 'throttlectl %s --help' for details.\n", c.name, err, c.synopsis(), c.name)
	return exitUsage
}

func (c *command) synopsis() string {
	s := "throttlectl " + c.name
	if c.args != "" {
		s += " " + c.args
	}
	if c.flags != "" {
		s += " " + c.flags
	}
	return s + " [flags]"
}

func (c *command) printHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\n%s\nFlags:\n", c.synopsis(), c.summary, strings.TrimSpace(c.help)+"\n")
	printFlags(w, fs)
	if !c.offline {
		fmt.Fprint(w, envHelp)
	}
	fmt.Fprint(w, exitHelp)
}

// printFlags lists the flags of fs as flag.PrintDefaults does, but spelled with two
// dashes, as the usage lines, the README and the users write them (the flag package
// takes either).
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		var b strings.Builder
		fmt.Fprintf(&b, "  --%s", f.Name)
		name, usage := flag.UnquoteUsage(f)
		if name != "" {
			b.WriteString(" " + name)
		}
		b.WriteString("\n    \t")
		b.WriteString(strings.ReplaceAll(usage, "\n", "\n    \t"))
		switch g, _ := f.Value.(flag.Getter); {
		case f.DefValue == "" || f.DefValue == "0" || f.DefValue == "0s" || f.DefValue == "false":
		case g != nil && isString(g.Get()):
			fmt.Fprintf(&b, " (default %q)", f.DefValue)
		default:
			fmt.Fprintf(&b, " (default %v)", f.DefValue)
		}
		fmt.Fprintln(w, b.String())
	})
}

func isString(v any) bool { _, ok := v.(string); return ok }

// flagError matches the errors of the flag package that name a flag with one dash (it
// spells every flag so, whatever the user typed), up to that dash.
var flagError = regexp.MustCompile(`^(flag provided but not defined: |flag needs an argument: |invalid value "(?:[^"\\]|\\.)*" for flag |invalid boolean value "(?:[^"\\]|\\.)*" for |invalid boolean flag )-?`)

// dashed rewrites an error of the flag package to name the flag with two dashes, as the
// help does.
func dashed(err error) error {
	msg := err.Error()
	if loc := flagError.FindStringSubmatchIndex(msg); loc != nil {
		return usageError{errors.New(msg[loc[2]:loc[3]] + "--" + msg[loc[1]:])}
	}
	return err
}

const envHelp = `
Environment (flags override): KAFKA_BROKERS, KAFKA_TLS_ENABLED, KAFKA_TLS_CA_FILE,
KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE, KAFKA_TLS_INSECURE_SKIP_VERIFY,
KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, SCHEMA_REGISTRY_URL,
SCHEMA_REGISTRY_USERNAME, SCHEMA_REGISTRY_PASSWORD, SCHEMA_REGISTRY_TIMEOUT,
THROTTLE_TOPIC, THROTTLECTL_TIMEOUT, LOG_LEVEL (default warn), LOG_FORMAT (default console).
`

const exitHelp = `
Exit codes: 0 ok, 1 error, 2 usage or configuration error, 3 not found (get).
`

func mainUsage() string {
	var b strings.Builder
	b.WriteString("throttlectl manages Sluice's throttles on their compacted Kafka topic.\n\nUsage: throttlectl COMMAND [arguments] [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-13s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun 'throttlectl COMMAND --help' for a command's flags.\n")
	b.WriteString(envHelp)
	b.WriteString(exitHelp)
	return b.String()
}

// parseInterspersed parses flags that may come before, between or after the positional
// arguments ("throttlectl set acme --limit 20/min"); the flag package alone stops at the
// first positional one. After "--" everything is positional (a customer id may start
// with a dash).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// newLogger builds the logger of the services' settings, writing to w (the command's
// stderr) rather than the process's, so tests see it and it never interleaves a line.
func newLogger(l envconfig.Log, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(l.Level)
	if err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	var enc zapcore.Encoder
	switch strings.ToLower(l.Format) {
	case "json", "":
		enc = zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	case "console":
		enc = zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	default:
		return nil, fmt.Errorf("LOG_FORMAT %q: want json or console", l.Format)
	}
	core := zapcore.NewCore(enc, zapcore.AddSync(w), lvl)
	// A table retries a record every few hundred milliseconds while the registry is away
	// and logs each attempt: on a terminal, the first few of each message in a second say
	// as much. Commands sum up what was dropped (poison counts) themselves.
	core = zapcore.NewSamplerWithOptions(core, time.Second, 3, 0)
	return zap.New(core), nil
}

// syncWriter serialises writes from the goroutines of a command (table observers,
// loggers, the command itself).
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
