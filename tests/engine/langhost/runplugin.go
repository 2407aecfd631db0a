// RunPlugin for policy packs, for the Node.js language host built by tests/engine/build-pulumi.sh.
// The host's own sources (sdk/v3 v3.68.0) answer "not supported"; the CLI (v3.274.1) starts a
// Node.js policy pack through this call. This does what the current official host does:
//   - the engine reads the analyzer's port from the first line of stdout and calls Handshake and
//     ConfigureStack on it. A small gRPC relay answers those two itself, so the pack can be started
//     with the stack's settings in its environment (PULUMI_CONFIG, PULUMI_NODEJS_STACK, ...), where
//     `new pulumi.Config()` reads them;
//   - then it runs `node <@pulumi/pulumi/cmd/run-policy-pack> <engine address> <pack dir>` in the
//     pack's directory and relays every later call to the pack's own port, as raw bytes.
//
// The v3.68.0 request type predates the fields the engine sends (info, kind), so they are read from
// the message's unknown fields.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	methodHandshake      = "/pulumirpc.Analyzer/Handshake"
	methodConfigureStack = "/pulumirpc.Analyzer/ConfigureStack"
)

// rawCodec passes messages through as bytes, so the relay needs no generated types for them.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// protoFields returns the length-delimited fields of a message by number (strings, messages, map entries).
func protoFields(b []byte) (map[protowire.Number][][]byte, map[protowire.Number]uint64, error) {
	bytesFields := map[protowire.Number][][]byte{}
	varints := map[protowire.Number]uint64{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, protowire.ParseError(n)
		}
		b = b[n:]
		switch typ {
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, nil, protowire.ParseError(m)
			}
			bytesFields[num] = append(bytesFields[num], v)
			b = b[m:]
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return nil, nil, protowire.ParseError(m)
			}
			varints[num] = v
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return nil, nil, protowire.ParseError(m)
			}
			b = b[m:]
		}
	}
	return bytesFields, varints, nil
}

func lastString(fields map[protowire.Number][][]byte, num protowire.Number) string {
	if vs := fields[num]; len(vs) > 0 {
		return string(vs[len(vs)-1])
	}
	return ""
}

// pluginRequest reads RunPluginRequest.info.program_directory (5.2, else root_directory 5.1) and kind (6).
func pluginRequest(req *pulumirpc.RunPluginRequest) (dir string, kind string, err error) {
	fields, _, err := protoFields(req.ProtoReflect().GetUnknown())
	if err != nil {
		return "", "", fmt.Errorf("reading the run plugin request: %w", err)
	}
	kind = lastString(fields, 6)
	if infos := fields[5]; len(infos) > 0 {
		info, _, err := protoFields(infos[len(infos)-1])
		if err != nil {
			return "", "", fmt.Errorf("reading the plugin's program info: %w", err)
		}
		dir = lastString(info, 2)
		if dir == "" {
			dir = lastString(info, 1)
		}
	}
	if dir == "" {
		dir = req.GetProgram()
	}
	return dir, kind, nil
}

// stackEnv turns an AnalyzerStackConfigureRequest into the environment the Node.js SDK reads.
func stackEnv(raw []byte) ([]string, error) {
	fields, varints, err := protoFields(raw)
	if err != nil {
		return nil, fmt.Errorf("reading the stack configuration: %w", err)
	}
	var env []string
	add := func(k, v string) {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	add("PULUMI_NODEJS_STACK", lastString(fields, 1))
	add("PULUMI_NODEJS_PROJECT", lastString(fields, 2))
	add("PULUMI_NODEJS_ORGANIZATION", lastString(fields, 3))
	add("PULUMI_NODEJS_DRY_RUN", strconv.FormatBool(varints[4] != 0))
	config := map[string]string{}
	for _, entry := range fields[7] {
		kv, _, err := protoFields(entry)
		if err != nil {
			return nil, fmt.Errorf("reading a stack configuration entry: %w", err)
		}
		config[lastString(kv, 1)] = lastString(kv, 2)
	}
	text, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	add("PULUMI_CONFIG", string(text))
	return env, nil
}

// streamWriter sends what it is given to the engine as the plugin's stdout or stderr.
type streamWriter struct {
	mu     *sync.Mutex
	server pulumirpc.LanguageRuntime_RunPluginServer
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	data := append([]byte(nil), p...)
	msg := &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: data}}
	if w.stderr {
		msg = &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: data}}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.server.Send(msg); err != nil {
		return 0, err
	}
	return len(p), nil
}

// policyRelay is the analyzer address the engine talks to; it holds calls until the pack is up.
type policyRelay struct {
	configured chan struct{}
	configOnce sync.Once
	config     []byte

	ready  chan struct{}
	conn   *grpc.ClientConn
	broken error
}

func (r *policyRelay) setConfig(raw []byte) {
	r.configOnce.Do(func() {
		r.config = raw
		close(r.configured)
	})
}

func (r *policyRelay) handle(_ interface{}, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	var in []byte
	if err := stream.RecvMsg(&in); err != nil {
		return err
	}
	empty := []byte{}
	switch method {
	case methodHandshake:
		return stream.SendMsg(&empty)
	case methodConfigureStack:
		r.setConfig(in)
		return stream.SendMsg(&empty)
	}
	// Any other call first: there is no stack configuration to wait for (e.g. `pulumi policy publish`).
	r.setConfig(nil)
	select {
	case <-r.ready:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	if r.broken != nil {
		return r.broken
	}
	var out []byte
	if err := r.conn.Invoke(stream.Context(), method, &in, &out, grpc.ForceCodec(rawCodec{})); err != nil {
		return err
	}
	return stream.SendMsg(&out)
}

func (host *nodeLanguageHost) RunPlugin(
	req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer,
) error {
	packDir, kind, err := pluginRequest(req)
	if err != nil {
		return err
	}
	if kind != "analyzer" {
		return fmt.Errorf("running a %q plugin is not supported by this language host; only policy packs", kind)
	}
	if packDir == "" {
		return errors.New("the run plugin request names no policy pack directory")
	}
	ctx, cancel := context.WithCancel(server.Context())
	defer cancel()

	nodeBin, err := exec.LookPath("node")
	if err != nil {
		return err
	}
	// Resolved from the pack's directory as Node does: its own node_modules, else a parent's.
	resolve := exec.CommandContext(ctx, nodeBin, "-e",
		`process.stdout.write(require.resolve("@pulumi/pulumi/cmd/run-policy-pack"))`)
	resolve.Dir = packDir
	runPolicyPack, err := resolve.Output()
	if err != nil {
		return fmt.Errorf("it looks like the policy pack's dependencies are not installed (no @pulumi/pulumi "+
			"found from %s); run npm install: %w", packDir, err)
	}

	mu := &sync.Mutex{}
	stdout := streamWriter{mu: mu, server: server}
	stderr := streamWriter{mu: mu, server: server, stderr: true}

	relay := &policyRelay{configured: make(chan struct{}), ready: make(chan struct{})}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(relay.handle), grpc.ForceServerCodec(rawCodec{}))
	go func() { _ = srv.Serve(listener) }()
	defer srv.Stop()
	if _, err := fmt.Fprintf(stdout, "%d\n", listener.Addr().(*net.TCPAddr).Port); err != nil {
		return err
	}

	select {
	case <-relay.configured:
	case <-ctx.Done():
		return ctx.Err()
	}
	env := req.GetEnv()
	if len(env) == 0 {
		env = os.Environ()
	}
	if relay.config != nil {
		extra, err := stackEnv(relay.config)
		if err != nil {
			return err
		}
		env = append(append([]string(nil), env...), extra...)
	}

	args := append([]string{string(runPolicyPack)}, req.GetArgs()...)
	cmd := exec.CommandContext(ctx, nodeBin, append(args, packDir)...)
	cmd.Dir = packDir
	cmd.Env = env
	cmd.Stderr = stderr
	packOut, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}

	// The pack's first line is its port; everything after it is its output.
	lines := bufio.NewReader(packOut)
	first, readErr := lines.ReadString('\n')
	port, convErr := strconv.Atoi(strings.TrimSpace(first))
	if readErr != nil || convErr != nil {
		relay.broken = fmt.Errorf("the policy pack did not start (first line of its output: %q)", first)
		if first != "" {
			_, _ = stdout.Write([]byte(first))
		}
	} else {
		relay.conn, relay.broken = grpc.Dial(fmt.Sprintf("127.0.0.1:%d", port),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if relay.broken == nil && relay.config != nil {
			var out []byte
			// A pack that predates ConfigureStack answers Unimplemented; it runs without stack tags.
			_ = relay.conn.Invoke(ctx, methodConfigureStack, &relay.config, &out, grpc.ForceCodec(rawCodec{}))
		}
	}
	close(relay.ready)
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(stdout, lines)
		close(copied)
	}()

	// All of the pack's output is read before Wait closes the pipe.
	<-copied
	waitErr := cmd.Wait()
	if relay.conn != nil {
		_ = relay.conn.Close()
	}
	code := 0
	if waitErr != nil {
		var exitErr *exec.ExitError
		if !errors.As(waitErr, &exitErr) {
			return waitErr
		}
		code = exitErr.ExitCode()
	}
	mu.Lock()
	defer mu.Unlock()
	return server.Send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(code)}})
}
