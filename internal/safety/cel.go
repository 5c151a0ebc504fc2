package safety

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"
	"gopkg.in/yaml.v3"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// CELJob is the job as a when expression sees it, the variable job:
// job.topic, job.tenant, job.priority ("BATCH", "INTERACTIVE", "CRITICAL" or
// "UNSPECIFIED"), job.env (map of environment variables), job.capabilities
// (list of required capabilities), job.labels (map of required labels),
// job.payload_size and job.context_size (bytes), job.max_attempts,
// job.timeout_ms and job.job_id.
type CELJob struct {
	Topic        string            `cel:"topic"`
	Tenant       string            `cel:"tenant"`
	Priority     string            `cel:"priority"`
	Env          map[string]string `cel:"env"`
	Capabilities []string          `cel:"capabilities"`
	Labels       map[string]string `cel:"labels"`
	PayloadSize  int64             `cel:"payload_size"`
	ContextSize  int64             `cel:"context_size"`
	MaxAttempts  int64             `cel:"max_attempts"`
	TimeoutMs    int64             `cel:"timeout_ms"`
	JobID        string            `cel:"job_id"`

	// priorityErr is set when the job's priority is not a value this
	// version knows: reading job.priority is then an evaluation error, never
	// a name that could pass for a known one.
	priorityErr error
}

// celCostLimit bounds the work of one evaluation: an expression that would
// do more (a comprehension over a huge map, say) fails, instead of stalling
// admission; the rule's on_error then decides.
const celCostLimit = 1_000_000

// celJobType is the CEL name of CELJob.
const celJobType = "safety.CELJob"

// celEnv is the environment every when expression compiles in.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		ext.NativeTypes(reflect.TypeFor[CELJob](), ext.ParseStructTags(true)),
		guardEnumFields,
		cel.Variable("job", cel.ObjectType(celJobType)),
		ext.Strings(),
		cel.ParserExpressionSizeLimit(4096),
		cel.ParserRecursionLimit(64),
	)
})

// guardEnumFields wraps the environment's type provider so that reading an
// enum field of CELJob whose value is out of range (job.priority of a job
// with priority 99) is an evaluation error.
func guardEnumFields(env *cel.Env) (*cel.Env, error) {
	return cel.CustomTypeProvider(&celJobProvider{Provider: env.CELTypeProvider()})(env)
}

type celJobProvider struct {
	types.Provider
}

func (p *celJobProvider) FindStructFieldType(structType, fieldName string) (*types.FieldType, bool) {
	ft, ok := p.Provider.FindStructFieldType(structType, fieldName)
	if !ok || structType != celJobType || fieldName != "priority" || ft.GetFrom == nil {
		return ft, ok
	}
	get := ft.GetFrom
	guarded := *ft
	guarded.GetFrom = func(obj any) (any, error) {
		if j, ok := obj.(*CELJob); ok && j.priorityErr != nil {
			return nil, j.priorityErr
		}
		return get(obj)
	}
	return &guarded, true
}

// errOutOfRange is an enum value this version does not know.
var errOutOfRange = errors.New("value out of range")

// priorityNames are the CEL names of the priorities, by value.
var priorityNames = func() map[pb.JobPriority]string {
	m := make(map[pb.JobPriority]string, len(pb.JobPriority_name))
	for v, name := range pb.JobPriority_name {
		m[pb.JobPriority(v)] = strings.TrimPrefix(name, "JOB_PRIORITY_")
	}
	return m
}()

// priorityName is p's CEL name; a value this version does not know is an
// error, never "UNSPECIFIED".
func priorityName(p pb.JobPriority) (string, error) {
	if name, ok := priorityNames[p]; ok {
		return name, nil
	}
	return "", fmt.Errorf("job.priority: %w: %d is not a priority this version knows", errOutOfRange, int32(p))
}

// compileWhen compiles a rule's when expression into r, reporting errors at
// the expression's place in the file.
func (ps *parser) compileWhen(n *yaml.Node, field, src string, r *rule) {
	prg, issues := compileCEL(src)
	if issues != nil {
		for _, e := range issues {
			line, col := n.Line, n.Column
			block := n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0
			switch {
			case block:
				// The expression starts on the line after the | or >.
				line += e.line
			case e.line <= 1 && n.Style == 0:
				col += max(e.col, 0)
			default:
				line += max(e.line-1, 0)
			}
			ps.errs = append(ps.errs, FieldError{Line: line, Col: col, Field: field, Msg: e.msg})
		}
		return
	}
	r.when, r.whenSrc = prg, src
}

type celIssue struct {
	line, col int // in the expression: line 1-based, col 0-based
	msg       string
}

// compileCEL compiles src into a program that must yield a bool.
func compileCEL(src string) (prg cel.Program, issues []celIssue) {
	defer func() {
		if r := recover(); r != nil {
			prg, issues = nil, []celIssue{{msg: fmt.Sprintf("cannot compile: %v", r)}}
		}
	}()
	env, err := celEnv()
	if err != nil {
		return nil, []celIssue{{msg: "CEL environment: " + err.Error()}}
	}
	ast, iss := env.Compile(src)
	if iss != nil && iss.Err() != nil {
		for _, e := range iss.Errors() {
			issues = append(issues, celIssue{line: e.Location.Line(), col: e.Location.Column(), msg: e.Message})
		}
		return nil, issues
	}
	if !ast.OutputType().IsExactType(types.BoolType) {
		return nil, []celIssue{{msg: fmt.Sprintf("%v, this one is %s", errNotBool, ast.OutputType())}}
	}
	prg, err = env.Program(ast, cel.CostLimit(celCostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, []celIssue{{msg: err.Error()}}
	}
	return prg, nil
}

// celActivation binds job to a request, built on first use.
type celActivation struct {
	req *pb.JobRequest
	job *CELJob
}

func (a *celActivation) ResolveName(name string) (any, bool) {
	if name != "job" {
		return nil, false
	}
	if a.job == nil {
		a.job = celJobOf(a.req)
	}
	return a.job, true
}

func (a *celActivation) Parent() interpreter.Activation { return nil }

func celJobOf(req *pb.JobRequest) *CELJob {
	env, labels := req.GetEnvVars(), req.GetRequiredLabels()
	if env == nil {
		env = map[string]string{}
	}
	if labels == nil {
		labels = map[string]string{}
	}
	caps := req.GetRequiredCapabilities()
	if caps == nil {
		caps = []string{}
	}
	priority, perr := priorityName(req.GetPriority())
	return &CELJob{
		Topic:        req.GetTopic(),
		Tenant:       req.GetTenant(),
		Priority:     priority,
		priorityErr:  perr,
		Env:          env,
		Capabilities: caps,
		Labels:       labels,
		PayloadSize:  int64(len(req.GetPayload())),
		ContextSize:  int64(len(req.GetContextPtr())),
		MaxAttempts:  int64(req.GetMaxAttempts()),
		TimeoutMs:    req.GetTimeoutMs(),
		JobID:        req.GetJobId(),
	}
}

// evalWhen evaluates r's expression for the job in act. An expression that
// fails at run time (a missing map key, the cost limit, an enum value out of
// range) returns the error, and the rule's on_error decides; it is never
// taken for "no match".
func evalWhen(r *rule, act *celActivation) (matched bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			matched, err = false, fmt.Errorf("panic: %v", p)
		}
	}()
	out, _, err := r.when.Eval(act)
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("yielded %v, not a bool", out)
	}
	return b, nil
}
