package bus

import "github.com/nats-io/nats.go"

// SetReplicas sets the replication factor of the intake streams that
// EnsureStream creates or updates from now on. Set it before Consume.
func (b *NatsBus) SetReplicas(n int) { b.cfg.Replicas = n }

// ClusterServers is how many servers the connection knows of in its
// server's cluster: 1 when the server is not clustered. It counts the
// servers the client was given and those the server announced (its
// connect_urls), so it is the cluster's size once the client has heard
// from a clustered server.
func ClusterServers(nc *nats.Conn) int {
	if nc == nil || nc.ConnectedClusterName() == "" {
		return 1
	}
	return max(len(nc.Servers()), 1)
}

// DefaultReplicas is the replication factor for configured (0: auto): 3 on
// a cluster of three or more servers, else 1.
func DefaultReplicas(nc *nats.Conn, configured int) int {
	if configured > 0 {
		return configured
	}
	if ClusterServers(nc) >= 3 {
		return 3
	}
	return 1
}
