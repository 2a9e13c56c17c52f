using LongCtx.Compiler.IR;
using LongCtx.Compiler.Passes;
using LongCtx.Compiler.Patterns;

namespace LongCtx.Compiler.Rewriting;

/// <summary>A rule that stopped short at a root of the input model, with what it reports.</summary>
public sealed record RootFailure(IRewriteRule Rule, Node Root, RuleFailure Failure);

/// <summary>What one driver run did: applications per rule name, the failures left at the input model's roots, convergence.</summary>
public sealed record DriverResult(IReadOnlyDictionary<string, int> Applications, IReadOnlyList<RootFailure> Failures, bool Converged)
{
    public int Total => Applications.Values.Sum();
}

/// <summary>
/// The greedy pattern-rewrite driver (MLIR's applyPatternsGreedily, tinygrad's graph_rewrite, STYLE principles 7 and
/// 10): a worklist of nodes, seeded in graph order; each node is offered to the rules rooted at its operator (a
/// dictionary op -> rules); the first rule whose Check succeeds is applied as one logical step
/// (<see cref="Rewriter.BeginStep"/>: <c>--step-limit</c> stops between applications, never inside one, and
/// <c>--trace</c> records it), nodes it made dead are erased, the graph is re-sorted when nodes were added, and the
/// nodes it added or touched go back on the worklist. It stops at a fixed point (no rule matches anything on the
/// worklist) or, reporting it in a pass note, after <c>maxApplications</c>.
/// Per rule: the number of applications (counted in the pass under the rule's Counter) and, for <c>--explain</c>,
/// the furthest failure of each rule that matched nothing.
/// </summary>
public static class GreedyDriver
{
    public static DriverResult Run(Model model, IReadOnlyList<IRewriteRule> rules, PassContext ctx, string passName, int? maxApplications = null)
    {
        var dispatch = new Dictionary<OpKey, List<IRewriteRule>>();
        foreach (var rule in rules)
            foreach (var root in rule.Roots)
                (dispatch.TryGetValue(root, out var list) ? list : dispatch[root] = []).Add(rule);

        var g = model.Graph;
        var rctx = new RuleContext(model, ctx.Options) { TargetContext = ctx.TargetContext };
        var original = new Dictionary<Node, int>();
        for (int i = 0; i < g.NodeList.Count; i++) original[g.NodeList[i]] = i;
        var tracking = new TrackingRewriter(ctx.Rewriter);
        var queue = new Queue<Node>();
        var queued = new HashSet<Node>();
        void Push(Node n)
        {
            if (n.Graph == g && dispatch.ContainsKey(OpKey.Of(n)) && !tracking.Erased.Contains(n) && queued.Add(n)) queue.Enqueue(n);
        }
        foreach (var n in g.Nodes) Push(n);

        var applications = rules.ToDictionary(r => r.Name, _ => 0, StringComparer.Ordinal);
        var failures = new Dictionary<(IRewriteRule, Node), RuleFailure>();
        var furthest = new Dictionary<IRewriteRule, RuleFailure>();
        var rewritten = new HashSet<Node>();
        int limit = maxApplications ?? 100 + 10 * g.NodeList.Count, total = 0;
        bool converged = true;
        while (queue.TryDequeue(out var node))
        {
            ctx.Cancellation.ThrowIfCancellationRequested();
            queued.Remove(node);
            if (tracking.Erased.Contains(node)) continue;
            foreach (var rule in dispatch[OpKey.Of(node)])
            {
                var (match, failure) = rule.TryMatch(node, rctx);
                if (match is null)
                {
                    failures[(rule, node)] = failure!;
                    if (!furthest.TryGetValue(rule, out var f) || failure!.Why.Depth > f.Why.Depth) furthest[rule] = failure!;
                    continue;
                }
                if (total >= limit)
                {
                    converged = false;
                    ctx.Note($"{passName}: stopped after {limit} rule applications without reaching a fixed point ({rule.Name} still matches at {node})");
                    queue.Clear();
                    break;
                }
                tracking.Begin();
                using (ctx.Rewriter.BeginStep($"{passName}: {rule.Name} at {node}"))
                {
                    rule.Apply(tracking, match);
                    tracking.EraseDead();
                    if (tracking.Added.Count > 0) ctx.Rewriter.SortTopologically(g);
                }
                total++;
                applications[rule.Name]++;
                ctx.Count(rule.Counter);
                rewritten.Add(node);
                foreach (var n in tracking.Added.Concat(tracking.Touched)) Push(n);
                break;
            }
        }

        var left = failures
            .Where(kv => original.ContainsKey(kv.Key.Item2) && !rewritten.Contains(kv.Key.Item2) && !tracking.Erased.Contains(kv.Key.Item2))
            .OrderBy(kv => original[kv.Key.Item2])
            .Select(kv => new RootFailure(kv.Key.Item1, kv.Key.Item2, kv.Value)).ToList();
        foreach (var rule in rules.Where(r => applications[r.Name] == 0))
            ctx.Explain(furthest.TryGetValue(rule, out var f)
                ? $"{rule.Name}: matched nothing; furthest failure at {f.Why.Where}: {f.Why.Reason}"
                : $"{rule.Name}: matched nothing; the model has no {string.Join(" or ", rule.Roots)} node");
        return new DriverResult(applications, left, converged);
    }

    /// <summary>
    /// The <see cref="IRewriter"/> rules get: forwards to the pass's <see cref="Rewriter"/>, remembers what one
    /// application added and touched, and erases what it left dead (producers of values that lost their last use).
    /// </summary>
    private sealed class TrackingRewriter(Rewriter rw) : IRewriter
    {
        private readonly Dictionary<string, object> _shared = new(StringComparer.Ordinal);
        private readonly List<Node> _deadCandidates = [];

        public List<Node> Added { get; } = [];
        public List<Node> Touched { get; } = [];
        public HashSet<Node> Erased { get; } = [];
        public Model Model => rw.Model;

        public void Begin()
        {
            Added.Clear();
            Touched.Clear();
            _deadCandidates.Clear();
        }

        public Node AddNode(Graph graph, string opType, IEnumerable<Value?> inputs, IEnumerable<string> outputNames, IEnumerable<Attr>? attrs = null, string domain = "", string? name = null)
        {
            var n = rw.AddNode(graph, opType, inputs, outputNames, attrs, domain, name);
            Added.Add(n);
            return n;
        }

        public Value Op(Graph graph, string opType, IEnumerable<Value?> inputs, IEnumerable<Attr>? attrs = null, string domain = "", string? outputName = null) =>
            AddNode(graph, opType, inputs, [outputName ?? opType.ToLowerInvariant() + "_out"], attrs, domain).Output();

        public Value AddInitializer(Graph graph, string nameHint, Tensor data) => rw.AddInitializer(graph, nameHint, data);

        public void SetInput(Node n, int index, Value? v)
        {
            if (n.Input(index) is { Producer: { } p }) _deadCandidates.Add(p);
            rw.SetInput(n, index, v);
            Touched.Add(n);
        }

        public void SetAttribute(Node n, Attr a)
        {
            rw.SetAttribute(n, a);
            Touched.Add(n);
        }

        public void SetType(Value v, TensorType? t) => rw.SetType(v, t);

        public void ReplaceAllUsesWith(Value old, Value replacement)
        {
            Touched.AddRange(old.Uses.Select(u => u.Node));
            if (old.Producer is { } p) _deadCandidates.Add(p);
            rw.ReplaceAllUsesWith(old, replacement);
        }

        public void Erase(Node n)
        {
            _deadCandidates.AddRange(n.Inputs.Select(i => i?.Producer).OfType<Node>());
            rw.RemoveNode(n);
            Erased.Add(n);
        }

        public void SetMetadata(string key, string value) => rw.SetMetadata(key, value);
        public Value AddInput(Graph graph, string name, TensorType type) => rw.AddInput(graph, name, type);
        public void RemoveInput(Graph graph, Value v) => rw.RemoveInput(graph, v);
        public void AddOutput(Graph graph, Value v, int position = -1) => rw.AddOutput(graph, v, position);
        public void RenameValue(Value v, string name) => rw.RenameValue(v, name);

        public void RemoveOutput(Graph graph, Value v)
        {
            rw.RemoveOutput(graph, v);
            if (v.Producer is { } p) _deadCandidates.Add(p);
        }
        public void EnsureOpset(string domain, long version) => rw.EnsureOpset(domain, version);

        public T Shared<T>(string key, Func<T> create) where T : class
        {
            if (_shared.TryGetValue(key, out var have)) return (T)have;
            var made = create();
            _shared[key] = made;
            return made;
        }

        /// <summary>Erases the nodes this application made dead, and then their producers, as they die in turn (MLIR erases trivially dead ops the same way).</summary>
        public void EraseDead()
        {
            var stack = new Stack<Node>(_deadCandidates);
            _deadCandidates.Clear();
            while (stack.TryPop(out var n))
            {
                if (Erased.Contains(n) || n.Outputs.Any(o => o is not null && o.IsUsed)) continue;
                var producers = n.Inputs.Select(i => i?.Producer).OfType<Node>().ToList();
                rw.RemoveNode(n);
                Erased.Add(n);
                foreach (var p in producers) stack.Push(p);
            }
            Touched.RemoveAll(Erased.Contains);
        }
    }
}
