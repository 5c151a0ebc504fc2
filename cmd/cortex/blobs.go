package main

// The blob store in the cortex command (docs/blobs.md): submit --input
// uploads a job's input, job result prints a job's result bytes.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/pkg/blob"
	"github.com/cortex-os/core/pkg/client"
)

// readInput reads submit --input: a file, or stdin for "-", at most the
// blob store's cap.
func readInput(cmd *cobra.Command, path string, maxBytes int64) ([]byte, error) {
	var r io.Reader = cmd.InOrStdin()
	name := "stdin"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("--input: %w", err)
		}
		defer f.Close()
		r, name = f, path
	}
	data, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("--input %s: %w", name, err)
	}
	if int64(len(data)) > maxBytes {
		return nil, fmt.Errorf("--input %s: more than %d bytes, the blob store's cap: %w", name, maxBytes, blob.ErrTooLarge)
	}
	return data, nil
}

// inputOptions are the submit options of --input, checked against the
// flags it excludes.
func inputOptions(cmd *cobra.Command, path, payload, contextPtr string) ([]client.SubmitOption, error) {
	if path == "" {
		return nil, nil
	}
	if payload != "" || contextPtr != "" {
		return nil, errors.New("--input with --payload or --context-ptr: give one")
	}
	data, err := readInput(cmd, path, blob.DefaultMaxBytes)
	if err != nil {
		return nil, err
	}
	return []client.SubmitOption{client.WithInput(data)}, nil
}

func newJobResultCommand() *cobra.Command {
	var (
		conn   connFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "result JOB_ID",
		Short: "Write a completed job's result bytes to stdout or a file",
		Long: `result reads what a COMPLETED job's result_ptr points at (a data: URL, or an
obj:// object in the blob store, checked against its SHA-256 digest) and
writes the bytes to stdout, or to --output. A job that did not complete, or a
result_ptr of another scheme (memory://, ...), is an error: cortex job get
shows the job. docs/blobs.md.`,
		Example: `  cortex submit --topic job.code.python --input main.py --wait
  cortex job result 6f1c... -o out.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := conn.open()
			if err != nil {
				return err
			}
			defer s.close()
			ctx, stop := signalContext(cmd)
			defer stop()
			data, err := s.client.Result(ctx, args[0])
			if err != nil {
				if errors.Is(err, client.ErrNotCompleted) || errors.Is(err, blob.ErrUnsupported) {
					return err
				}
				return s.explain(err)
			}
			if output == "" || output == "-" {
				_, err := cmd.OutOrStdout().Write(data)
				return err
			}
			// Whole or not at all: a temporary file renamed into place.
			tmp, err := os.CreateTemp(filepath.Dir(output), ".cortex-result-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			if _, err := tmp.Write(data); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			return os.Rename(tmp.Name(), output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the bytes to this file (default stdout)")
	conn.register(cmd.Flags(), "timeout")
	return cmd
}
