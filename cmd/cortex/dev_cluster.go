package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/system"
)

// devNodeSubject is where a running `cortex dev --cluster` takes requests
// to stop or start one of its nodes: "kill <n>" or "restart <n>".
const devNodeSubject = "_CORTEX.dev.node"

// devClusterFlags are dev's flags for a cluster of embedded nodes.
type devClusterFlags struct {
	size, schedulers, routePort int
	killNode, restartNode       int
}

func (c *devClusterFlags) register(f *pflag.FlagSet) {
	f.IntVar(&c.size, "cluster", 0, "run this many embedded NATS nodes clustered on loopback (ports --port, --port+1, ...), streams and buckets R3 with three or more, and elected schedulers (docs/deploy.md)")
	f.IntVar(&c.schedulers, "schedulers", 2, "with --cluster: scheduler candidates, one active at a time (scheduler.leader_election); 0: none")
	f.IntVar(&c.routePort, "route-port", 6222, "with --cluster: the first node's cluster (route) port; the others take the next ones")
	f.IntVar(&c.killNode, "kill-node", 0, "stop node N of a running `cortex dev --cluster` (found at --port ...) and exit")
	f.IntVar(&c.restartNode, "restart-node", 0, "start node N of a running `cortex dev --cluster` again and exit")
}

// devClusterArgs are the other dev flags a cluster run uses.
type devClusterArgs struct {
	host, dataDir, policy, placementFile string
	apiAddr                              string // the HTTP gateway's; "" none
	port, httpPort, workers              int
	syncAlways, auth                     bool
	work                                 echo.WorkTime
	log                                  *slog.Logger
}

// control sends a kill or restart to a running dev cluster; handled is
// false when neither flag was given.
func (c *devClusterFlags) control(out io.Writer, host string, port int) (handled bool, err error) {
	if c.killNode == 0 && c.restartNode == 0 {
		return false, nil
	}
	if c.killNode != 0 && c.restartNode != 0 {
		return true, errors.New("--kill-node and --restart-node: give one")
	}
	verb, n := "kill", c.killNode
	if c.restartNode != 0 {
		verb, n = "restart", c.restartNode
	}
	var urls []string
	for i := range 7 {
		urls = append(urls, fmt.Sprintf("nats://%s:%d", host, port+i))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Timeout(2*time.Second))
	if err != nil {
		return true, fmt.Errorf("no cortex dev --cluster is answering on %s:%d-%d: %w", host, port, port+6, err)
	}
	defer nc.Close()
	// Asked up to three times: right after a node stops, the server this
	// request reaches may still route it to the stopped node's server
	// (kill and restart are idempotent: a repeat answers "already ...").
	var msg *nats.Msg
	for try := 0; try < 3; try++ {
		msg, err = nc.Request(devNodeSubject, fmt.Appendf(nil, "%s %d", verb, n), 5*time.Second)
		if !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, nats.ErrNoResponders) {
			break
		}
	}
	if err != nil {
		return true, fmt.Errorf("%s node %d: %w (is cortex dev --cluster running?)", verb, n, err)
	}
	if reply := string(msg.Data); strings.HasPrefix(reply, "error: ") {
		return true, errors.New(strings.TrimPrefix(reply, "error: "))
	} else {
		fmt.Fprintln(out, reply)
	}
	return true, nil
}

// run runs dev with a cluster of nodes: NATS nodes on loopback, elected
// schedulers, echo workers; the nodes can be stopped and started while it
// runs (--kill-node, --restart-node from another shell).
func (c *devClusterFlags) run(cmd *cobra.Command, a devClusterArgs) error {
	if a.auth {
		return errors.New("--cluster with --auth is not supported yet: run the cluster without --auth, or see docs/deploy.md for a secured cluster")
	}
	if c.size < 1 || c.size > 7 {
		return fmt.Errorf("--cluster %d: 1 to 7 nodes", c.size)
	}
	out := cmd.OutOrStdout()
	base := embeddednats.Config{Host: a.host, Port: a.port, HTTPPort: a.httpPort, StoreDir: a.dataDir, SyncAlways: a.syncAlways, ReadyTimeout: 15 * time.Second}
	cl, err := embeddednats.StartCluster(embeddednats.ClusterConfig{Base: base, Size: c.size, ClusterPort: c.routePort, Name: "cortex-dev"})
	if err != nil {
		return err
	}
	defer func() {
		cl.Shutdown()
		fmt.Fprintln(out, "CortexOS dev stopped.")
	}()
	urls := cl.URLs()
	abs, _ := filepath.Abs(a.dataDir)
	fmt.Fprintf(out, "CortexOS dev: %d NATS nodes clustered on loopback (cluster cortex-dev; JetStream data in %s/node-N)\n", c.size, abs)
	for _, n := range cl.Nodes {
		mon := ""
		if n.HTTPPort > 0 {
			mon = fmt.Sprintf(", monitoring http://%s:%d/", a.host, n.HTTPPort)
		}
		fmt.Fprintf(out, "  node %d:      %s (routes :%d%s)\n", n.Index, n.URL(), n.ClusterPort, mon)
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = embeddednats.WaitJetStream(wctx, urls, c.size)
	cancel()
	if err != nil {
		return fmt.Errorf("the cluster's JetStream is not ready: %w", err)
	}
	stopControl, err := serveDevNodeControl(cl, a.log)
	if err != nil {
		return err
	}
	defer stopControl()

	parts := system.SchedulerOptions{Safety: config.Safety{Policy: a.policy}}
	if a.placementFile != "" {
		if parts.Placement, err = system.LoadPlacement(a.placementFile); err != nil {
			return err
		}
	}
	settings := config.Scheduler{LeaderElection: true}
	var wg sync.WaitGroup
	errs := make(chan error, c.schedulers+a.workers)
	schedCtx, stopSched := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSched()
	started := make(chan struct{}, c.schedulers)
	for i := range c.schedulers {
		wg.Go(func() {
			err := system.RunScheduler(schedCtx, system.SchedulerOptions{
				NatsURL: urls, ID: fmt.Sprintf("cortex-scheduler-%d", i+1), Logger: a.log, Settings: settings,
				Safety: parts.Safety, Placement: parts.Placement, Started: func() { started <- struct{}{} },
			})
			if err != nil {
				errs <- fmt.Errorf("scheduler %d: %w", i+1, err)
			}
		})
		if i == 0 {
			// The first creates the streams; the others find them.
			select {
			case <-started:
			case err := <-errs:
				stopSched()
				wg.Wait()
				return err
			case <-ctx.Done():
				stopSched()
				wg.Wait()
				return nil
			}
		}
	}
	if c.schedulers > 0 {
		fmt.Fprintf(out, "  schedulers:  %d, one active (lease in CORTEX_LEADER), streams and buckets R%d\n", c.schedulers, min(c.size, 3))
	} else {
		fmt.Fprintln(out, "  schedulers:  none (--schedulers 0): NATS only, for cortex bench --nats-url or schedulers of your own")
	}
	if c.schedulers > 0 {
		fmt.Fprintf(out, "  send a job:  ./bin/cortex submit --nats-url %s --topic job.echo --wait\n", urls)
	} else {
		fmt.Fprintf(out, "  bench:       ./bin/cortex bench --nats-url %s --store jetstream\n", urls)
	}
	fmt.Fprintf(out, "  stop a node: ./bin/cortex dev --kill-node N   (start it again: --restart-node N; --port %d finds this run)\n", a.port)
	if a.apiAddr != "" && c.schedulers > 0 {
		waitGateway, err := startDevGateway(ctx, out, a.apiAddr, urls, abs, a.log, nil, nil)
		if err != nil {
			stopSched()
			wg.Wait()
			return err
		}
		defer func() { stop(); waitGateway() }() // the gateway stops with ctx
	}
	fmt.Fprintln(out, "  Ctrl-C stops everything.")
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	var pool sync.WaitGroup
	for range a.workers {
		pool.Go(func() {
			if err := system.RunEchoWorker(workCtx, system.EchoWorkerOptions{NatsURL: urls, WorkTime: a.work, Logger: a.log, Direct: true}); err != nil {
				errs <- fmt.Errorf("echo worker: %w", err)
				stopWork()
			}
		})
	}
	<-workCtx.Done()
	pool.Wait()
	stopSched()
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// serveDevNodeControl answers "kill <n>" and "restart <n>" on devNodeSubject,
// through one connection to each node in one queue group: when a node
// stops, the others still serve at once, without waiting for a connection
// to move (a request right after a kill timed out while it did).
func serveDevNodeControl(cl *embeddednats.Cluster, log *slog.Logger) (func(), error) {
	var conns []*nats.Conn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	// A node is stopped on a goroutine of its own: stopping a JetStream
	// node can take a while, and the connection serving these requests may
	// be the node's own (it reconnects elsewhere meanwhile), so the handler
	// never waits for it. stopping holds the nodes whose stop is under way.
	var mu sync.Mutex
	stopping := map[int]chan struct{}{}
	var stops sync.WaitGroup
	handle := func(m *nats.Msg) {
		verb, arg, _ := strings.Cut(string(m.Data), " ")
		i, _ := strconv.Atoi(arg)
		n := cl.Node(i)
		mu.Lock()
		done := stopping[i]
		mu.Unlock()
		if done != nil && verb == "restart" {
			select { // a restart right after a kill waits for the stop
			case <-done:
			case <-time.After(10 * time.Second):
				_ = m.Respond(fmt.Appendf(nil, "error: node %d is still stopping", i))
				return
			}
			done = nil
		}
		reply := ""
		switch {
		case n == nil:
			reply = fmt.Sprintf("error: no node %q: 1 to %d", arg, len(cl.Nodes))
		case verb == "kill" && (done != nil || !n.Running()):
			reply = fmt.Sprintf("node %d is already stopped", i)
		case verb == "kill":
			done := make(chan struct{})
			mu.Lock()
			stopping[i] = done
			mu.Unlock()
			log.Warn("stopping NATS node", "component", "dev", "node", i, "url", n.URL())
			stops.Go(func() {
				n.Stop()
				mu.Lock()
				delete(stopping, i)
				mu.Unlock()
				close(done)
			})
			reply = fmt.Sprintf("node %d (%s) stopping", i, n.URL())
		case verb == "restart" && n.Running():
			reply = fmt.Sprintf("node %d is already running", i)
		case verb == "restart":
			if err := n.Start(); err != nil {
				reply = "error: " + err.Error()
			} else {
				log.Warn("started NATS node again", "component", "dev", "node", i, "url", n.URL())
				reply = fmt.Sprintf("node %d (%s) started again", i, n.URL())
			}
		default:
			reply = "error: want kill N or restart N"
		}
		_ = m.Respond([]byte(reply))
	}
	for _, node := range cl.Nodes {
		nc, err := nats.Connect(node.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
			nats.DontRandomize(), nats.Name("cortex-dev-control"))
		if err == nil {
			conns = append(conns, nc)
			_, err = nc.QueueSubscribe(devNodeSubject, "cortex-dev-control", handle)
		}
		if err != nil {
			closeAll()
			return nil, err
		}
	}
	return func() { closeAll(); stops.Wait() }, nil
}
