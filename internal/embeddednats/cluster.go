package embeddednats

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a set of embedded servers routed to each other on loopback,
// JetStream clustered over them. Each node keeps its ports and its data
// directory across Stop and Start, as a server restarted by a supervisor
// does, so clients reconnect to it and its streams catch up.
type Cluster struct {
	Name  string
	Nodes []*Node
}

// Node is one server of a Cluster.
type Node struct {
	Index       int // 1-based
	Name        string
	Port        int
	ClusterPort int
	HTTPPort    int
	Dir         string

	cfg Config
	mu  sync.Mutex
	srv *server.Server
}

// ClusterConfig configures StartCluster.
type ClusterConfig struct {
	// Base is each node's configuration: Host (default 127.0.0.1), Port
	// (the first node's; the others take the next ones; -1: free ports),
	// HTTPPort (likewise; 0 none), StoreDir (each node uses node-<i> in it),
	// SyncAlways, Users, ConfigFile, Configure. JetStream is always on.
	Base Config
	// Size is the number of nodes. Default 3.
	Size int
	// ClusterPort is the first node's route port; -1 (or 0): free ports.
	ClusterPort int
	// Name of the cluster. Default cortex.
	Name string
	// Node, when set, is called with each node's 1-based index and options
	// last: a test routes the nodes through proxies this way, say.
	Node func(index int, o *server.Options)
}

// StartCluster starts the nodes and waits until each accepts clients.
// JetStream may still be electing its meta leader when it returns: the
// first requests may have to be retried (WaitJetStream in natstest does).
func StartCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Size <= 0 {
		cfg.Size = 3
	}
	if cfg.Name == "" {
		cfg.Name = "cortex"
	}
	base := cfg.Base
	if base.Host == "" {
		base.Host = "127.0.0.1"
	}
	if base.StoreDir == "" {
		return nil, errors.New("embeddednats: a cluster needs a StoreDir")
	}
	free, err := FreePorts(base.Host, 3*cfg.Size)
	if err != nil {
		return nil, err
	}
	pick := func(first, i, kind int) int {
		if first > 0 {
			return first + i
		}
		return free[kind*cfg.Size+i]
	}
	c := &Cluster{Name: cfg.Name}
	for i := range cfg.Size {
		n := &Node{Index: i + 1, Name: fmt.Sprintf("%s-%d", cfg.Name, i+1), Port: pick(base.Port, i, 0), ClusterPort: pick(cfg.ClusterPort, i, 1),
			Dir: filepath.Join(base.StoreDir, fmt.Sprintf("node-%d", i+1))}
		if base.HTTPPort != 0 {
			n.HTTPPort = pick(base.HTTPPort, i, 2)
		}
		c.Nodes = append(c.Nodes, n)
	}
	var routes []string
	for _, n := range c.Nodes {
		routes = append(routes, fmt.Sprintf("nats-route://%s:%d", base.Host, n.ClusterPort))
	}
	for _, n := range c.Nodes {
		nc := base
		nc.Port, nc.HTTPPort, nc.StoreDir, nc.JetStream = n.Port, n.HTTPPort, n.Dir, true
		if nc.ReadyTimeout == 0 {
			nc.ReadyTimeout = 10 * time.Second
		}
		user := base.Configure
		name, cport, host, index := n.Name, n.ClusterPort, base.Host, n.Index
		nc.Configure = func(o *server.Options) {
			o.ServerName = name
			o.Cluster.Name, o.Cluster.Host, o.Cluster.Port = cfg.Name, host, cport
			o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
			if user != nil {
				user(o)
			}
			if cfg.Node != nil {
				cfg.Node(index, o)
			}
		}
		n.cfg = nc
	}
	for _, n := range c.Nodes {
		if err := n.Start(); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	return c, nil
}

// URLs is every node's client URL, comma separated, as clients take them.
func (c *Cluster) URLs() string {
	var us []string
	for _, n := range c.Nodes {
		us = append(us, n.URL())
	}
	return strings.Join(us, ",")
}

// Node returns the node of 1-based index i, or nil.
func (c *Cluster) Node(i int) *Node {
	if i < 1 || i > len(c.Nodes) {
		return nil
	}
	return c.Nodes[i-1]
}

// Shutdown stops every node that runs.
func (c *Cluster) Shutdown() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Go(n.Stop)
	}
	wg.Wait()
}

// URL is the node's client URL, the same across restarts.
func (n *Node) URL() string { return fmt.Sprintf("nats://%s:%d", n.cfg.Host, n.Port) }

// Server is the running server, or nil.
func (n *Node) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Running reports whether the node runs.
func (n *Node) Running() bool { return n.Server() != nil }

// Stop shuts the node down, if it runs, and waits until it is down.
func (n *Node) Stop() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Start starts the node (again) on its ports and data directory, retrying
// for up to 10 s while a port is still held by the server just stopped.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return fmt.Errorf("embeddednats: node %d already runs", n.Index)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		srv, err := Start(n.cfg)
		if err == nil {
			n.srv = srv
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("embeddednats: node %d: %w", n.Index, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FreePorts returns n distinct free TCP ports on host.
func FreePorts(host string, n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("embeddednats: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// WaitJetStream waits until the servers at urls take (and delete) a stream
// of the given replicas: the cluster has its meta leader and its peers.
func WaitJetStream(ctx context.Context, urls string, replicas int) error {
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("CORTEX_PROBE_%d", time.Now().UnixNano())
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.CreateStream(rctx, jetstream.StreamConfig{Name: name, Subjects: []string{"_CORTEX.probe." + name}, Replicas: replicas, Storage: jetstream.MemoryStorage})
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return js.DeleteStream(dctx, name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
