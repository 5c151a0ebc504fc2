// Command cortex is the CortexOS command line: `cortex dev` runs the whole
// system on an embedded NATS server, `cortex submit`, `cortex job` and
// `cortex dlq` submit, follow and inspect jobs, and `cortex bench` measures
// the system.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/internal/infrastructure/config"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "cortex:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "cortex",
		Short:         "CortexOS: an AI control plane on NATS",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// NATS credentials for every command that connects (docs/security.md).
	config.RegisterCredentialFlags(root.PersistentFlags())
	registerIdentityFlag(root.PersistentFlags())
	root.AddCommand(newDevCommand(), newServerCommand())
	root.AddCommand(newBenchCommand())
	root.AddCommand(newSubmitCommand(), newJobCommand(), newDLQCommand())
	root.AddCommand(newPolicyCommand())
	root.AddCommand(newSafetyCommand())
	root.AddCommand(newWorkersCommand())
	root.AddCommand(newGatewayCommand())
	return root
}
