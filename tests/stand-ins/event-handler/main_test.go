package main

// The precedence kong gives command-line flags, the --config TOML and the environment, as this
// build (Debian's kong) resolves them, and the stand-in's own pieces. README.md quotes the results.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chartTOML is the TOML the official chart renders, keys the stand-in ignores included.
const chartTOML = `storage = "/var/lib/teleport/plugins/event-handler/storage"
timeout = "10s"
batch = 20
window-size = "24h"
debug = false

[teleport]
addr = "teleport.example.com:443"
identity = "/var/lib/teleport/plugins/event-handler/teleport-identity/auth_id"
refresh.enabled = true

[forward.fluentd]
url = "http://toml:8888/test.log"
session-url = "http://toml:8888/session"
ca = "%CA%"
`

// precedenceEnv is every environment variable the cases set; each case starts without them.
var precedenceEnv = []string{"FDFWD_FLUENTD_URL", "FDFWD_FLUENTD_SESSION_URL", "FDWRD_FLUENTD_CA",
	"FDWRD_FLUENTD_CERT", "FDWRD_FLUENTD_KEY", "FDFWD_STORAGE", "FDFWD_CONFIG", "STANDIN_GENERATE"}

func clearEnv(t *testing.T) {
	for _, name := range precedenceEnv {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
}

// files writes the chart's TOML (its ca pointing at an existing file) and two more files.
func files(t *testing.T) (config, tomlCA, envCA, flagCA string) {
	dir := t.TempDir()
	tomlCA, envCA, flagCA = filepath.Join(dir, "toml-ca.crt"), filepath.Join(dir, "env-ca.crt"), filepath.Join(dir, "flag-ca.crt")
	for _, f := range []string{tomlCA, envCA, flagCA} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	config = filepath.Join(dir, "teleport-event-handler.toml")
	if err := os.WriteFile(config, []byte(strings.Replace(chartTOML, "%CA%", tomlCA, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return config, tomlCA, envCA, flagCA
}

func mustParse(t *testing.T, args ...string) *StartCmd {
	t.Helper()
	cli, ctx, err := parse(args)
	if err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	if ctx.Command() != "start" {
		t.Fatalf("command %q, want start", ctx.Command())
	}
	return &cli.Start
}

func want(t *testing.T, what, got, expected string) {
	t.Helper()
	if got != expected {
		t.Errorf("%s = %q, want %q", what, got, expected)
	}
}

func TestTOMLAloneConfiguresFluentdAndStorage(t *testing.T) {
	clearEnv(t)
	config, tomlCA, _, _ := files(t)
	c := mustParse(t, "start", "--config", config)
	want(t, "url", c.FluentdURL, "http://toml:8888/test.log")
	want(t, "session url", c.FluentdSessionURL, "http://toml:8888/session")
	want(t, "ca", c.FluentdCA, tomlCA)
	want(t, "storage", c.StorageDir, "/var/lib/teleport/plugins/event-handler/storage")
	// The chart's command puts --config after `start`; kong also takes it before.
	c = mustParse(t, "--config", config, "start")
	want(t, "url (--config before start)", c.FluentdURL, "http://toml:8888/test.log")
}

func TestFlagBeatsTOML(t *testing.T) {
	clearEnv(t)
	config, _, _, flagCA := files(t)
	c := mustParse(t, "start", "--config", config, "--fluentd-url", "http://flag/test.log", "--fluentd-ca", flagCA)
	want(t, "url", c.FluentdURL, "http://flag/test.log")
	want(t, "ca", c.FluentdCA, flagCA)
	want(t, "session url (TOML)", c.FluentdSessionURL, "http://toml:8888/session")
}

// The environment loses to the TOML: kong fills flags from the environment first, then lets the
// TOML resolver overwrite every flag the command line did not set.
func TestTOMLBeatsEnvironment(t *testing.T) {
	clearEnv(t)
	config, _, _, _ := files(t)
	t.Setenv("FDFWD_FLUENTD_URL", "http://env/test.log")
	t.Setenv("FDFWD_STORAGE", "/env/storage")
	c := mustParse(t, "start", "--config", config)
	want(t, "url", c.FluentdURL, "http://toml:8888/test.log")
	want(t, "storage", c.StorageDir, "/var/lib/teleport/plugins/event-handler/storage")
}

// A file flag (`type:"existingfile"`) set by both the environment and the TOML ends up empty, with
// no error: the environment's value marks the flag set, and kong 0.7.1's existingfile mapper
// returns early, without storing anything, for a flag already set, so the TOML's value is
// dropped and the empty value the resolver pass started from is applied.
func TestEnvironmentAndTOMLOnAFileFlagLeaveItEmpty(t *testing.T) {
	clearEnv(t)
	config, _, envCA, _ := files(t)
	t.Setenv("FDWRD_FLUENTD_CA", envCA)
	c := mustParse(t, "start", "--config", config)
	want(t, "ca", c.FluentdCA, "")
	// Not even checked: a TOML naming a missing file parses.
	missing := strings.Replace(chartTOML, "%CA%", filepath.Join(t.TempDir(), "missing.crt"), 1)
	broken := filepath.Join(t.TempDir(), "broken.toml")
	if err := os.WriteFile(broken, []byte(missing), 0o600); err != nil {
		t.Fatal(err)
	}
	c = mustParse(t, "start", "--config", broken)
	want(t, "ca (TOML names a missing file)", c.FluentdCA, "")
}

func TestEnvironmentFillsWhatTheTOMLLeavesOut(t *testing.T) {
	clearEnv(t)
	config, _, _, _ := files(t)
	t.Setenv("FDWRD_FLUENTD_CERT", config) // any existing file; the chart's TOML has no cert
	c := mustParse(t, "start", "--config", config)
	want(t, "cert", c.FluentdCert, config)
}

func TestFlagBeatsEnvironmentAndTOML(t *testing.T) {
	clearEnv(t)
	config, _, envCA, flagCA := files(t)
	t.Setenv("FDFWD_FLUENTD_URL", "http://env/test.log")
	t.Setenv("FDWRD_FLUENTD_CA", envCA)
	c := mustParse(t, "start", "--config", config, "--fluentd-url", "http://flag/test.log", "--fluentd-ca", flagCA)
	want(t, "url", c.FluentdURL, "http://flag/test.log")
	want(t, "ca", c.FluentdCA, flagCA)
	clearEnv(t)
	t.Setenv("FDFWD_FLUENTD_URL", "http://env/test.log")
	c = mustParse(t, "start", "--fluentd-url", "http://flag/test.log", "--fluentd-session-url", "http://flag/s", "--storage", "/s")
	want(t, "url without TOML", c.FluentdURL, "http://flag/test.log")
}

func TestEnvironmentAloneConfigures(t *testing.T) {
	clearEnv(t)
	t.Setenv("FDFWD_FLUENTD_URL", "http://env/test.log")
	t.Setenv("FDFWD_FLUENTD_SESSION_URL", "http://env/session")
	t.Setenv("FDFWD_STORAGE", "/env/storage")
	c := mustParse(t, "start")
	want(t, "url", c.FluentdURL, "http://env/test.log")
	want(t, "session url", c.FluentdSessionURL, "http://env/session")
	want(t, "storage", c.StorageDir, "/env/storage")
}

// FDFWD_CONFIG names the file, but kong 0.7.1 runs ConfigFlag's loading hook only for a flag given
// on the command line (or one with a default): a file named by the environment alone is not read.
func TestConfigFromEnvironmentIsNotRead(t *testing.T) {
	clearEnv(t)
	config, _, _, _ := files(t)
	t.Setenv("FDFWD_CONFIG", config)
	_, _, err := parse([]string{"start"})
	if err == nil || !strings.Contains(err.Error(), "missing flags") {
		t.Fatalf("parse with FDFWD_CONFIG only: %v, want kong's missing flags error", err)
	}
	t.Setenv("FDFWD_FLUENTD_URL", "http://env/test.log")
	t.Setenv("FDFWD_FLUENTD_SESSION_URL", "http://env/session")
	t.Setenv("FDFWD_STORAGE", "/env/storage")
	c := mustParse(t, "start")
	want(t, "url", c.FluentdURL, "http://env/test.log")
}

// The ca/cert/key files must exist whatever the URL's scheme, wherever their names come from.
func TestTLSFilesMustExistEvenForHTTP(t *testing.T) {
	clearEnv(t)
	missing := filepath.Join(t.TempDir(), "missing.crt")
	base := []string{"start", "--fluentd-url", "http://127.0.0.1:1/test.log", "--fluentd-session-url", "http://127.0.0.1:1/s", "--storage", "/s"}
	for _, flag := range []string{"--fluentd-ca", "--fluentd-cert", "--fluentd-key"} {
		_, _, err := parse(append(base, flag, missing))
		if err == nil || !strings.Contains(err.Error(), "missing.crt") {
			t.Errorf("%s %s: %v, want an error naming the file", flag, missing, err)
		}
	}
	t.Setenv("FDWRD_FLUENTD_KEY", missing)
	if _, _, err := parse(base); err == nil || !strings.Contains(err.Error(), "FDWRD_FLUENTD_KEY") {
		t.Errorf("FDWRD_FLUENTD_KEY=%s: %v, want an error naming the variable", missing, err)
	}
	clearEnv(t)
	broken := filepath.Join(t.TempDir(), "broken.toml")
	text := strings.Replace(chartTOML, "%CA%", missing, 1)
	if err := os.WriteFile(broken, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := parse([]string{"start", "--config", broken}); err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Errorf("TOML ca = %s: %v, want an error naming the file", missing, err)
	}
	if _, _, err := parse([]string{"start", "--config", missing}); err == nil {
		t.Errorf("--config %s: no error", missing)
	}
}

func TestCertWithoutKeyIsRefused(t *testing.T) {
	cert := filepath.Join(t.TempDir(), "c.crt")
	if _, err := newClient(&StartCmd{FluentdCert: cert}); err == nil {
		t.Error("a cert without a key was accepted")
	}
	if _, err := newClient(&StartCmd{FluentdKey: cert}); err == nil {
		t.Error("a key without a cert was accepted")
	}
}

func TestDecorrelatedBackoffStaysWithinBaseAndCap(t *testing.T) {
	base, max := time.Second, 10*time.Second
	wait, sawAboveBase := base, false
	for i := 0; i < 1000; i++ {
		wait = decorrelated(base, max, wait)
		if wait < base || wait > max {
			t.Fatalf("wait %s outside [%s, %s]", wait, base, max)
		}
		sawAboveBase = sawAboveBase || wait > base
	}
	if !sawAboveBase {
		t.Error("the backoff never grew above its base")
	}
}

func TestSessionRouting(t *testing.T) {
	cases := map[string]string{
		`{"event":"print","sid":"s-1","data":"ls"}`: "s-1",
		`{"event":"session.start","sid":"s-1"}`:     "",
		`{"event":"print"}`:                         "",
		`{"event":"user.login","uid":"u"}`:          "",
	}
	for body, sid := range cases {
		got, ok := sessionID([]byte(body))
		if got != sid || ok != (sid != "") {
			t.Errorf("sessionID(%s) = %q, %v; want %q", body, got, ok, sid)
		}
	}
}

func TestGeneratedEventsAreDeterministicAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for n := 1; n <= 100; n++ {
		body := generated(n)
		if string(body) != string(generated(n)) {
			t.Fatalf("event %d differs between calls", n)
		}
		var e struct{ Event, UID, Time string }
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("event %d: %v: %s", n, err, body)
		}
		if e.Event != "user.login" || e.UID == "" || seen[e.UID] {
			t.Fatalf("event %d: %s", n, body)
		}
		if _, err := time.Parse(time.RFC3339Nano, e.Time); err != nil {
			t.Fatalf("event %d time: %v", n, err)
		}
		seen[e.UID] = true
	}
}

func TestCursorRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), cursorFile)
	if n, err := readCursor(path); err != nil || n != 0 {
		t.Fatalf("no cursor: %d, %v", n, err)
	}
	for _, n := range []int{1, 7, 12} {
		if err := writeCursor(path, n); err != nil {
			t.Fatal(err)
		}
		if got, err := readCursor(path); err != nil || got != n {
			t.Fatalf("cursor %d read back as %d, %v", n, got, err)
		}
	}
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readCursor(path); err == nil {
		t.Error("a cursor that is no number was accepted")
	}
}
