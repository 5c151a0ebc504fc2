package security

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/natstest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// authority is a certificate authority made for a test.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial int64

func newAuthority(t *testing.T, name string) *authority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &authority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a certificate for a server (the given names) or a client.
func (a *authority) issue(t *testing.T, cn string, server bool, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial + 1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, n := range names {
			if ip := net.ParseIP(n); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, n)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func writePEM(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Mutual TLS under the shipped permissions: the server presents a
// certificate of the test's authority and demands one from every client.
// With the CA, its certificate and the right password a client is admitted
// and its query answered; without a certificate, with a certificate of
// another authority, or trusting another authority, it is not; a server
// name other than the certificate's fails.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, rogue := newAuthority(t, "cortex test CA"), newAuthority(t, "rogue CA")
	srvCert, srvKey := ca.issue(t, "nats", true, "127.0.0.1", "nats.test")
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	clients := x509.NewCertPool()
	clients.AddCert(ca.cert)
	srv := natstest.RunServerWith(t, embeddednats.Config{
		ConfigFile: shippedConfig(t),
		Configure: func(o *server.Options) {
			o.TLS, o.TLSVerify = true, true
			o.TLSConfig = &tls.Config{
				MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair},
				ClientCAs: clients, ClientAuth: tls.RequireAndVerifyClientCert,
			}
		},
	})
	// nats://, not tls://: the credentials' CA turns TLS on.
	url := "nats://" + strings.TrimPrefix(srv.ClientURL(), "tls://")

	caFile, rogueFile := writePEM(t, dir, "ca.pem", ca.pem), writePEM(t, dir, "rogue.pem", rogue.pem)
	c, k := ca.issue(t, "client", false)
	certFile, keyFile := writePEM(t, dir, "client.pem", c), writePEM(t, dir, "client-key.pem", k)
	rc, rk := rogue.issue(t, "client", false)
	rogueCert, rogueKey := writePEM(t, dir, "rogue-client.pem", rc), writePEM(t, dir, "rogue-client-key.pem", rk)

	mtls := func(user string) bus.Credentials {
		c := creds(user)
		c.CA, c.Cert, c.Key = caFile, certFile, keyFile
		return c
	}
	dial := func(c bus.Credentials) (*bus.NatsBus, error) {
		opts, err := c.Options()
		if err != nil {
			t.Fatal(err)
		}
		b, err := bus.Connect(bus.Config{URL: url, Logger: logging.Discard(), Options: opts})
		if err == nil {
			t.Cleanup(b.Close)
		}
		return b, err
	}

	sched, err := dial(mtls("scheduler"))
	if err != nil {
		t.Fatalf("the scheduler over mutual TLS: %v", err)
	}
	drain, err := sched.Serve(wire.ClientSubject(wire.SubjectQuery, "client"), "", func(p *pb.BusPacket) *pb.BusPacket {
		out := wire.NewPacket(p.GetTraceId(), "scheduler")
		out.Payload = &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Error: "answered over TLS"}}
		return out
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drain() })
	fctx, fcancel := context.WithTimeout(context.Background(), waitFor)
	defer fcancel()
	if err := sched.Flush(fctx); err != nil {
		t.Fatal(err)
	}

	named := mtls("client")
	named.TLSServerName = "nats.test"
	for name, c := range map[string]bus.Credentials{"by address": mtls("client"), "by server name": named} {
		client, err := dial(c)
		if err != nil {
			t.Fatalf("client %s: %v", name, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		q := wire.NewPacket("t", "client")
		q.Payload = &pb.BusPacket_JobQuery{JobQuery: &pb.JobQuery{JobId: "j"}}
		answer, err := client.Request(ctx, wire.ClientSubject(wire.SubjectQuery, "client"), q)
		cancel()
		if err != nil || answer.GetJobAnswer().GetError() != "answered over TLS" {
			t.Fatalf("client %s: query over mutual TLS: %v, %v", name, answer, err)
		}
	}

	noCert := creds("client")
	noCert.CA = caFile
	rogueIdentity := mtls("client")
	rogueIdentity.Cert, rogueIdentity.Key = rogueCert, rogueKey
	trustsRogue := mtls("client")
	trustsRogue.CA = rogueFile
	wrongName := mtls("client")
	wrongName.TLSServerName = "other.test"
	wrongPassword := mtls("client")
	wrongPassword.Password = "not-it"
	for name, c := range map[string]bus.Credentials{
		"without a client certificate":          noCert,
		"with another authority's certificate":  rogueIdentity,
		"trusting another authority":            trustsRogue,
		"expecting another server name":         wrongName,
		"with a certificate but a bad password": wrongPassword,
	} {
		if _, err := dial(c); err == nil {
			t.Errorf("a client %s was admitted", name)
		}
	}
}
