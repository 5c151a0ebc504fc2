package gateway_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/gateway"
)

// The exposure rule: without keys, loopback only, unless insecure.
func TestListenLoopbackRule(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	noKeys, err := gateway.New(gateway.Config{Client: rg.env.Client(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0"} {
		if _, err := noKeys.Listen(gateway.ListenConfig{Addr: addr}); !errors.Is(err, gateway.ErrExposed) {
			t.Errorf("no keys on %s: %v, want ErrExposed", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := noKeys.Listen(gateway.ListenConfig{Addr: addr})
		if err != nil {
			t.Errorf("no keys on %s: %v", addr, err)
			continue
		}
		runFor(t, ln)
	}
	// Insecure, or with keys: any address.
	ln, err := noKeys.Listen(gateway.ListenConfig{Addr: "0.0.0.0:0", InsecureNoAuth: true})
	if err != nil {
		t.Fatalf("--insecure-no-auth: %v", err)
	}
	runFor(t, ln)
	ln, err = rg.srv.Listen(gateway.ListenConfig{Addr: "0.0.0.0:0"})
	if err != nil {
		t.Fatalf("with keys: %v", err)
	}
	base := runFor(t, ln)
	// Served, and the keys hold.
	port := base[strings.LastIndex(base, ":"):]
	res, err := http.Get("http://127.0.0.1" + port + "/v1/jobs")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Errorf("no key on a keyed gateway: %d, want 401", res.StatusCode)
	}
}

// runFor runs ln until the test ends and returns its URL.
func runFor(t *testing.T, ln *gateway.Listener) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ln.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ln.URL()
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cortex-gateway-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// With a certificate the gateway serves HTTPS only.
func TestListenTLS(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	certFile, keyFile, pool := selfSigned(t)
	if _, err := rg.srv.Listen(gateway.ListenConfig{Addr: "127.0.0.1:0", TLSCert: certFile}); !errors.Is(err, gateway.ErrInvalidConfig) {
		t.Errorf("a certificate without its key: %v", err)
	}
	ln, err := rg.srv.Listen(gateway.ListenConfig{Addr: "127.0.0.1:0", TLSCert: certFile, TLSKey: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	base := runFor(t, ln)
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("URL %s, want https", base)
	}
	c := &http.Client{Timeout: waitFor, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", base+"/v1/me", nil)
	req.Header.Set("Authorization", "Bearer key-a")
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.TLS == nil || !strings.Contains(string(b), `"tenant":"a"`) {
		t.Errorf("over TLS: %d %s (tls %v)", res.StatusCode, b, res.TLS != nil)
	}
	// Plain HTTP on the TLS port is not served.
	res, err = http.Get("http://" + strings.TrimPrefix(base, "https://") + "/healthz")
	if err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Errorf("plain HTTP served on the TLS port")
		}
	}
}

// Run stops promptly when its context ends, even with an event stream
// open: the stream ends, the caller sees its end.
func TestListenShutdownEndsStreams(t *testing.T) {
	t.Parallel()
	rg := start(t, gateway.Config{})
	ln, err := rg.srv.Listen(gateway.ListenConfig{Addr: "127.0.0.1:0", ShutdownGrace: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ln.Run(ctx) }()
	defer cancel()

	rg.url = ln.URL()
	rg.want(t, 201, "POST", "/v1/jobs", "key-a", `{"topic":"job.gw","job_id":"held-stream"}`) // never released
	req, _ := http.NewRequest("GET", ln.URL()+"/v1/jobs/held-stream/events", nil)
	req.Header.Set("Authorization", "Bearer key-a")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("events: %d", res.StatusCode)
	}
	ended := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, res.Body); close(ended) }()

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not return with a stream open")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("stopping took %s: the stream held it to the grace period", d)
	}
	select {
	case <-ended:
	case <-time.After(waitFor):
		t.Fatal("the stream did not end")
	}
	if _, err := http.Get(ln.URL() + "/healthz"); err == nil {
		t.Error("still serving after Run returned")
	}
	close(rg.g.gate("held-stream")) // the worker's job ends, so the test's env stops at once
}
