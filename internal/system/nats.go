package system

import (
	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/cortex-os/core/internal/infrastructure/config"
)

// NatsOptions applies the --nats-* credential flags given in f (nil: none;
// see config.RegisterCredentialFlags) to cfg and returns the connection
// options for cfg's credentials, every file read and checked: an error names
// the field. Credentials come from the config file, then the environment,
// then the flags, each winning over the one before.
func NatsOptions(f *pflag.FlagSet, cfg *config.Config) ([]nats.Option, error) {
	if f != nil {
		if err := config.ApplyCredentialFlags(f, cfg); err != nil {
			return nil, err
		}
	}
	return cfg.NATS.Options()
}
