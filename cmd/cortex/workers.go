package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

func newWorkersCommand() *cobra.Command {
	var (
		conn   connFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "workers",
		Short: "List the live workers: capacity, load, capabilities, labels, last heartbeat",
		Long: `workers asks a scheduler for the workers it knows alive: each one's pool,
capacity, the jobs placed on it (assigned) and those it reports running
(active), its CPU and GPU load, capabilities, labels, the topics it serves,
whether it takes jobs on its own subject (direct) or is draining, and how long
ago it last heartbeated. See docs/scheduling.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := conn.open()
			if err != nil {
				return err
			}
			defer s.close()
			ctx, cancel := s.request(cmd.Context())
			defer cancel()
			ws, err := s.client.Workers(ctx)
			if err != nil {
				return s.explain(err)
			}
			sort.Slice(ws, func(i, j int) bool { return ws[i].GetHeartbeat().GetWorkerId() < ws[j].GetHeartbeat().GetWorkerId() })
			if asJSON {
				views := make([]workerView, 0, len(ws))
				for _, w := range ws {
					views = append(views, workerViewOf(w))
				}
				return writeJSON(cmd.OutOrStdout(), views)
			}
			return writeWorkers(cmd.OutOrStdout(), ws, time.Now())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	conn.register(cmd.Flags(), "timeout")
	return cmd
}

type workerView struct {
	WorkerID     string            `json:"worker_id"`
	Type         string            `json:"type,omitempty"`
	Pool         string            `json:"pool,omitempty"`
	Capacity     int32             `json:"capacity"`
	Assigned     int32             `json:"assigned"`
	ActiveJobs   int32             `json:"active_jobs"`
	CPULoad      float32           `json:"cpu_load"`
	GPUUtil      float32           `json:"gpu_utilization"`
	Capabilities []string          `json:"capabilities,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Topics       []string          `json:"topics,omitempty"`
	Direct       bool              `json:"direct"`
	Draining     bool              `json:"draining"`
	LastSeen     string            `json:"last_seen,omitempty"`
}

func workerViewOf(w *pb.WorkerInfo) workerView {
	hb := w.GetHeartbeat()
	return workerView{
		WorkerID: hb.GetWorkerId(), Type: hb.GetType(), Pool: hb.GetPool(),
		Capacity: hb.GetCapacity(), Assigned: w.GetAssigned(), ActiveJobs: hb.GetActiveJobs(),
		CPULoad: hb.GetCpuLoad(), GPUUtil: hb.GetGpuUtilization(),
		Capabilities: hb.GetCapabilities(), Labels: hb.GetLabels(), Topics: hb.GetTopics(),
		Direct: hb.GetDirect(), Draining: hb.GetDraining(), LastSeen: formatMs(w.GetLastSeenMs()),
	}
}

// writeWorkers writes one line per worker.
func writeWorkers(out io.Writer, ws []*pb.WorkerInfo, now time.Time) error {
	if len(ws) == 0 {
		_, err := fmt.Fprintln(out, "no live workers")
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tPOOL\tCAPACITY\tASSIGNED\tACTIVE\tCPU%\tGPU%\tCAPABILITIES\tLABELS\tFLAGS\tLAST HEARTBEAT")
	for _, w := range ws {
		v := workerViewOf(w)
		labels := make([]string, 0, len(v.Labels))
		for k, val := range v.Labels {
			labels = append(labels, k+"="+val)
		}
		sort.Strings(labels)
		var flags []string
		if v.Direct {
			flags = append(flags, "direct")
		}
		if v.Draining {
			flags = append(flags, "draining")
		}
		seen := "-"
		if ms := w.GetLastSeenMs(); ms > 0 {
			seen = now.Sub(time.UnixMilli(ms)).Round(100*time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", v.WorkerID, dash(v.Pool), v.Capacity, v.Assigned, v.ActiveJobs,
			strconv.FormatFloat(float64(v.CPULoad), 'f', 0, 32), strconv.FormatFloat(float64(v.GPUUtil), 'f', 0, 32),
			dash(strings.Join(v.Capabilities, ",")), dash(strings.Join(labels, ",")), dash(strings.Join(flags, ",")), seen)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
