package natstest

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cortex-os/core/internal/embeddednats"
)

// PartitionableCluster is a Cluster whose nodes reach each other only
// through proxies, one per ordered pair of nodes, so that a test cuts one
// node off from the others (Partition) and lets it back (Heal) while it
// runs and keeps its clients: a network partition, as the rest of the
// cluster and the node's own clients see it.
type PartitionableCluster struct {
	*Cluster
	proxies map[[2]int]*routeProxy // [from, to], 1-based
}

// RunPartitionableCluster starts size nodes (3 when 0) routed through
// proxies. Route gossip is turned off (each node advertises an address
// nobody listens on), so no node bypasses a proxy.
func RunPartitionableCluster(t testing.TB, size int) *PartitionableCluster {
	t.Helper()
	if size <= 0 {
		size = 3
	}
	pc := &PartitionableCluster{proxies: map[[2]int]*routeProxy{}}
	for from := 1; from <= size; from++ {
		for to := 1; to <= size; to++ {
			if from == to {
				continue
			}
			p, err := newRouteProxy()
			if err != nil {
				t.Fatalf("natstest: %v", err)
			}
			t.Cleanup(p.close)
			pc.proxies[[2]int{from, to}] = p
		}
	}
	c, err := embeddednats.StartCluster(embeddednats.ClusterConfig{
		Base: embeddednats.Config{Port: -1, StoreDir: t.TempDir(), ReadyTimeout: 10 * time.Second},
		Size: size, ClusterPort: -1, Name: "test",
		Node: func(index int, o *server.Options) {
			var routes []string
			for to := 1; to <= size; to++ {
				if to != index {
					routes = append(routes, "nats-route://"+pc.proxies[[2]int{index, to}].addr())
				}
			}
			o.Routes = server.RoutesFromStr(join(routes))
			o.Cluster.Advertise = "127.0.0.1:1" // no gossip around the proxies
		},
	})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(c.Shutdown)
	for key, p := range pc.proxies {
		p.setTarget(c.Node(key[1]).ClusterPort)
	}
	pc.Cluster = &Cluster{c}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := WaitJetStream(ctx, c.URLs(), size); err != nil {
		t.Fatalf("natstest: cluster JetStream: %v", err)
	}
	return pc
}

func join(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ","
		}
		out += v
	}
	return out
}

// Partition cuts node i off from every other node (its clients stay
// connected to it).
func (pc *PartitionableCluster) Partition(i int) {
	for key, p := range pc.proxies {
		if key[0] == i || key[1] == i {
			p.setCut(true)
		}
	}
}

// Heal lets node i reach the others again.
func (pc *PartitionableCluster) Heal(i int) {
	for key, p := range pc.proxies {
		if key[0] == i || key[1] == i {
			p.setCut(false)
		}
	}
}

// routeProxy forwards connections to a node's cluster port unless cut;
// cutting closes the connections it carries.
type routeProxy struct {
	l net.Listener

	mu     sync.Mutex
	target int
	cut    bool
	conns  map[net.Conn]struct{}
}

func newRouteProxy() (*routeProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("route proxy: %w", err)
	}
	p := &routeProxy{l: l, conns: map[net.Conn]struct{}{}}
	go p.serve()
	return p, nil
}

func (p *routeProxy) addr() string { return p.l.Addr().String() }

func (p *routeProxy) setTarget(port int) {
	p.mu.Lock()
	p.target = port
	p.mu.Unlock()
}

func (p *routeProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

func (p *routeProxy) close() {
	p.l.Close()
	p.setCut(true)
}

func (p *routeProxy) serve() {
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target, cut := p.target, p.cut
		p.mu.Unlock()
		if cut || target == 0 {
			in.Close()
			continue
		}
		out, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", target), time.Second)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			in.Close()
			out.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

func (p *routeProxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}
