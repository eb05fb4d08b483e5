// Command teleport-plugin stands in for Teleport's event-handler (`teleport-plugin start`) in
// eventplug's tests, where the real binary cannot be had. It takes the same command line,
// environment names and TOML keys, resolved by kong the way event-handler resolves them, and keeps
// event-handler's delivery contract towards fluentd: one POST per event, in order, only a 200
// counts, 5 tries with decorrelated backoff and then a non-zero exit, a cursor saved only after a
// 200 so that a restart resumes where the last run stopped. The events come from a JSON-lines file
// or are generated, not from Teleport. README.md says what it mirrors and what it does not.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	toml "github.com/pelletier/go-toml"
)

// CLI is event-handler's command line, reduced to what reaches fluentd, plus the stand-in's own
// event source. Names, env names and file checks are event-handler's (its cli.go).
type CLI struct {
	Config kong.ConfigFlag `help:"Path to TOML configuration file" optional:"true" short:"c" type:"existingfile" env:"FDFWD_CONFIG"`
	Start  StartCmd        `cmd:"true" help:"Send the events to fluentd in order, then idle"`
}

// StartCmd is `teleport-plugin start`.
type StartCmd struct {
	FluentdURL        string `help:"fluentd url" required:"true" env:"FDFWD_FLUENTD_URL"`
	FluentdSessionURL string `help:"fluentd session url" required:"true" env:"FDFWD_FLUENTD_SESSION_URL"`
	FluentdCert       string `help:"fluentd TLS certificate file" type:"existingfile" env:"FDWRD_FLUENTD_CERT"`
	FluentdKey        string `help:"fluentd TLS key file" type:"existingfile" env:"FDWRD_FLUENTD_KEY"`
	FluentdCA         string `help:"fluentd TLS CA file" type:"existingfile" env:"FDWRD_FLUENTD_CA"`
	StorageDir        string `help:"Storage directory (the stand-in keeps its cursor there)" required:"true" env:"FDFWD_STORAGE" name:"storage"`
	ExitOnLastEvent   bool   `help:"Exit when the last event is delivered instead of idling"`

	// The stand-in's own settings (event-handler has none of these).
	Events    string        `help:"Events to send: a file of JSON objects, one a line (stand-in only)" type:"existingfile" env:"STANDIN_EVENTS"`
	Generate  int           `help:"Send N generated user.login events instead of --events (stand-in only)" env:"STANDIN_GENERATE"`
	RetryBase time.Duration `help:"Backoff base between tries (stand-in only; event-handler: 1s)" default:"1s" env:"STANDIN_RETRY_BASE"`
	RetryMax  time.Duration `help:"Backoff cap between tries (stand-in only; event-handler: 10s)" default:"10s" env:"STANDIN_RETRY_MAX"`
}

const (
	// tries is how often one event is sent before the run gives up.
	tries = 5
	// httpTimeout is event-handler's fluentd client timeout.
	httpTimeout = 30 * time.Second
	// cursorFile holds, in the storage folder, how many events fluentd has accepted.
	cursorFile = "stand-in-cursor"
)

// sections maps a flag-name prefix to the TOML table holding the rest of the name, as
// event-handler's TOML resolver does (`fluentd-url` is `[forward.fluentd] url`).
var sections = map[string]string{"fluentd": "forward.fluentd"}

// tomlLoader is the kong.ConfigurationLoader for the file given with --config: a resolver that
// answers a flag from the TOML key of the same name, or from its section's table. Keys no flag
// asks for (`[teleport]`, `timeout`, `batch`, ...) are never looked at.
func tomlLoader(r io.Reader) (kong.Resolver, error) {
	tree, err := toml.LoadReader(r)
	if err != nil {
		return nil, fmt.Errorf("TOML configuration: %w", err)
	}
	return kong.ResolverFunc(func(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (interface{}, error) {
		if v := tree.Get(flag.Name); v != nil {
			return v, nil
		}
		for prefix, table := range sections {
			if rest := strings.TrimPrefix(flag.Name, prefix+"-"); rest != flag.Name {
				if v := tree.Get(table + "." + rest); v != nil {
					return v, nil
				}
			}
		}
		return nil, nil
	}), nil
}

// parse resolves the command line as event-handler does: flags, the --config TOML and the
// environment, in whatever order kong gives them (README.md records the order seen).
func parse(args []string, options ...kong.Option) (*CLI, *kong.Context, error) {
	var cli CLI
	options = append([]kong.Option{
		kong.Name("teleport-plugin"),
		kong.Description("Stand-in for Teleport's event-handler in eventplug's tests"),
		kong.UsageOnError(),
		kong.Configuration(tomlLoader),
	}, options...)
	parser, err := kong.New(&cli, options...)
	if err != nil {
		return nil, nil, err
	}
	ctx, err := parser.Parse(args)
	if err != nil {
		return nil, nil, err
	}
	return &cli, ctx, nil
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("teleport-plugin stand-in: ")
	cli, ctx, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "teleport-plugin: error: %v\n", err)
		os.Exit(1)
	}
	if ctx.Command() != "start" {
		fmt.Fprintf(os.Stderr, "teleport-plugin: error: unknown command %q\n", ctx.Command())
		os.Exit(1)
	}
	exitOnSignal()
	if err := run(&cli.Start); err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

// exitOnSignal ends the process on SIGTERM or SIGINT, also as a container's PID 1 (which has no
// default handlers). Nothing is lost: the cursor is written whole after each 200.
func exitOnSignal() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-signals
		log.Printf("stopping on %v", s)
		os.Exit(0)
	}()
}

func run(c *StartCmd) error {
	for _, line := range [][2]string{
		{"Fluentd url", c.FluentdURL}, {"Fluentd session url", c.FluentdSessionURL},
		{"Fluentd ca", c.FluentdCA}, {"Fluentd cert", c.FluentdCert}, {"Fluentd key", c.FluentdKey},
		{"storage", c.StorageDir},
	} {
		log.Printf("Using %s: %q", line[0], line[1])
	}
	events, err := loadEvents(c)
	if err != nil {
		return err
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	if c.RetryBase <= 0 || c.RetryMax < c.RetryBase {
		return fmt.Errorf("--retry-base (%s) must be positive and at most --retry-max (%s)", c.RetryBase, c.RetryMax)
	}
	if err := os.MkdirAll(c.StorageDir, 0o700); err != nil {
		return fmt.Errorf("storage folder: %w", err)
	}
	cursorPath := filepath.Join(c.StorageDir, cursorFile)
	next, err := readCursor(cursorPath)
	if err != nil {
		return err
	}
	total := events.count()
	log.Printf("resuming at event %d of %d (cursor %s)", next+1, total, cursorPath)
	s := sender{client: client, base: c.RetryBase, max: c.RetryMax}
	for i := next; i < total; i++ {
		body := events.get(i)
		url := c.FluentdURL
		if sid, ok := sessionID(body); ok {
			url = c.FluentdSessionURL + "." + sid + ".log"
		}
		if err := s.deliver(url, body, i+1); err != nil {
			return err
		}
		if err := writeCursor(cursorPath, i+1); err != nil {
			return err
		}
		log.Printf("event %d of %d delivered to %s", i+1, total, url)
	}
	log.Printf("all %d events delivered", total)
	if c.ExitOnLastEvent {
		return nil
	}
	select {} // idle, so that a pod stays Running; exitOnSignal ends it
}

// newClient is event-handler's fluentd client: cert and key both or neither, an optional CA (the
// system's roots otherwise), loaded whatever the URL's scheme; HTTP/2 when TLS negotiates it,
// HTTP/1.1 with keep-alive over plain HTTP; no proxy; a 30 s timeout.
func newClient(c *StartCmd) (*http.Client, error) {
	tlsConfig := &tls.Config{}
	switch {
	case c.FluentdCert != "" && c.FluentdKey != "":
		cert, err := tls.LoadX509KeyPair(c.FluentdCert, c.FluentdKey)
		if err != nil {
			return nil, fmt.Errorf("fluentd client certificate %s / key %s: %w", c.FluentdCert, c.FluentdKey, err)
		}
		tlsConfig.Certificates = []tls.Certificate{cert}
	case c.FluentdCert != "":
		return nil, errors.New("fluentd cert provided with no private key (set --fluentd-key too)")
	case c.FluentdKey != "":
		return nil, errors.New("fluentd private key provided with no cert (set --fluentd-cert too)")
	}
	if c.FluentdCA != "" {
		pem, err := os.ReadFile(c.FluentdCA)
		if err != nil {
			return nil, fmt.Errorf("fluentd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("fluentd CA %s holds no PEM certificate", c.FluentdCA)
		}
		tlsConfig.RootCAs = pool
	}
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: tlsConfig, ForceAttemptHTTP2: true},
		Timeout:   httpTimeout,
	}, nil
}

// sender posts one event until fluentd answers 200, at most `tries` times.
type sender struct {
	client    *http.Client
	base, max time.Duration
}

func (s *sender) deliver(url string, body []byte, n int) error {
	wait := s.base
	for try := 1; ; try++ {
		err := s.post(url, body)
		if err == nil {
			return nil
		}
		if try == tries {
			return fmt.Errorf("giving up on event %d after %d tries (the cursor stays before it): %v", n, tries, err)
		}
		wait = decorrelated(s.base, s.max, wait)
		log.Printf("event %d: try %d of %d failed: %v; next try in %s", n, try, tries, err, wait.Round(time.Millisecond))
		time.Sleep(wait)
	}
}

func (s *sender) post(url string, body []byte) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16)) // read to the end: keep-alive
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fluentd answered %s: %.200q", resp.Status, answer)
	}
	return nil
}

// decorrelated is the next wait of a decorrelated-jitter backoff: random in [base, 3*previous],
// capped at max.
func decorrelated(base, max, previous time.Duration) time.Duration {
	upper := 3 * previous
	if upper <= base {
		return base
	}
	next := base + time.Duration(rand.Int63n(int64(upper-base)+1))
	if next > max {
		return max
	}
	return next
}

// sessionID is the session an event is routed by: a `print` event with a `sid` goes to the
// session URL.
func sessionID(body []byte) (string, bool) {
	var e struct {
		Event string `json:"event"`
		SID   string `json:"sid"`
	}
	if json.Unmarshal(body, &e) != nil || e.Event != "print" || e.SID == "" {
		return "", false
	}
	return e.SID, true
}

// eventSource is the stream to send: the same events in the same order on every run, so that a
// cursor means the same thing after a restart.
type eventSource struct {
	lines    [][]byte // from --events
	generate int      // or this many generated
}

func (s *eventSource) count() int {
	if s.lines != nil {
		return len(s.lines)
	}
	return s.generate
}

func (s *eventSource) get(i int) []byte {
	if s.lines != nil {
		return s.lines[i]
	}
	return generated(i + 1)
}

// generateEpoch is the time of generated event 0; event n is n seconds later.
var generateEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// generated is event n (from 1) of --generate: a successful local user.login, shaped as
// event-handler posts it, with a uid and time derived from n.
func generated(n int) []byte {
	return []byte(fmt.Sprintf(`{"ei":0,"event":"user.login","uid":"00000000-0000-4000-8000-%012d",`+
		`"code":"T1000I","time":%q,"cluster_name":"stand-in.example.com","user":"stand-in",`+
		`"success":true,"method":"local","addr.remote":"127.0.0.1:%d"}`,
		n, generateEpoch.Add(time.Duration(n)*time.Second).Format("2006-01-02T15:04:05.000Z"), 1024+n%60000))
}

func loadEvents(c *StartCmd) (*eventSource, error) {
	switch {
	case c.Events != "" && c.Generate != 0:
		return nil, errors.New("give --events FILE or --generate N, not both")
	case c.Generate < 0:
		return nil, fmt.Errorf("--generate %d: the number of events must not be negative", c.Generate)
	case c.Generate > 0:
		return &eventSource{generate: c.Generate}, nil
	case c.Events == "":
		return nil, errors.New("no events to send: give --events FILE (JSON lines) or --generate N")
	}
	data, err := os.ReadFile(c.Events)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	lines := [][]byte{}
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var object map[string]interface{}
		if err := json.Unmarshal(line, &object); err != nil {
			return nil, fmt.Errorf("%s line %d is not a JSON object: %v", c.Events, i+1, err)
		}
		lines = append(lines, line)
	}
	return &eventSource{lines: lines}, nil
}

// readCursor is how many events were delivered by earlier runs: 0 without a cursor file.
func readCursor(path string) (int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cursor: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("cursor %s holds %q, not a count of events; remove it to start over", path, data)
	}
	return n, nil
}

// writeCursor replaces the cursor whole (a new file renamed over the old one), so a process killed
// at any moment leaves either the old count or the new one.
func writeCursor(path string, n int) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("cursor: %w", err)
	}
	_, err = fmt.Fprintf(f, "%d\n", n)
	if err == nil {
		err = f.Sync()
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("cursor: %w", err)
	}
	return nil
}
