using LongCtx.Compiler.Schemas;
using LongCtx.Compiler.IR;
using LongCtx.Contract;

namespace LongCtx.Compiler.Capabilities;

/// <summary>One layer's cache values in a graph: past inputs and the present outputs that replace them.</summary>
public sealed record KvLayerValues(int Layer, Value PastKey, Value PastValue, Value PresentKey, Value PresentValue);

/// <summary>
/// What the runtime may do with a graph's KV cache, decided from the graph alone (no session, no probe), so that
/// <c>lcc compile</c> records it in longctx.json and the runtime trusts the record (<see cref="RuntimeCapabilities"/>).
/// <para>
/// Rule (ORT contrib_ops GroupQueryAttention: present length = max(total_sequence_length, past buffer length); new
/// tokens are written at seqlens_k + 1 - S and attention is masked by seqlens_k / total_sequence_length, never by the
/// buffer's shape): when every layer's past key/value graph inputs are read only by one com.microsoft.GroupQueryAttention
/// (or longctx.LongAttention, which keeps that contract)
/// (inputs past_key / past_value) whose present_key / present_value outputs are that layer's present graph outputs and
/// read by nothing else, then (a) one buffer per layer may be bound as both past and present (shared KV buffer) and
/// (b) a multi-token chunk may follow a non-empty past (chunked prefill). Any other graph gets neither: the runtime
/// concatenates the cache and prefills in one piece, which is always exact.
/// </para>
/// <code>
///   past_key_values.L.key ──► GroupQueryAttention ──► present.L.key   (graph output, no other reader)
///   past_key_values.L.value ─┘        (com.microsoft)  └► present.L.value
/// </code>
/// </summary>
public static class RuntimeCapabilityAnalysis
{
    private static readonly OpSchema Gqa = OpSchemas.GroupQueryAttention;
    private const string GqaOp = "GroupQueryAttention";
    private const string GqaDomain = OpSchemas.MsDomain;
    private static int GqaPastKey => Gqa.In("past_key");
    private static int GqaPastValue => Gqa.In("past_value");
    private static int GqaPresentKey => Gqa.Out("present_key");
    private static int GqaPresentValue => Gqa.Out("present_value");

    public static RuntimeCapabilities Analyze(Model model)
    {
        var g = model.Graph;
        int gqa = g.Nodes.Count(Gqa.Is);
        string? why = WhyNotShared(g);
        return why is null
            ? new RuntimeCapabilities(true, true, null, null, gqa)
            : new RuntimeCapabilities(false, false, why,
                $"not every attention is a {GqaOp} reading its past inputs directly ({why})", gqa);
    }

    /// <summary>Why one shared past/present buffer per layer cannot serve this graph, or null when it can.</summary>
    public static string? WhyNotShared(Graph g)
    {
        if (g.Inputs.Any(v => !v.IsInitializer && KvNames.Parse(v.Name, KvRole.Past) is { Layout: KvLayout.Static }))
            return "the model has a Static cache";
        var (layers, problem) = Layers(g);
        if (problem is not null) return problem;
        foreach (var layer in layers)
        {
            Node? attention = null;
            foreach (var (past, slot) in new[] { (layer.PastKey, GqaPastKey), (layer.PastValue, GqaPastValue) })
            {
                if (past.Uses.Any(u => u.Node.Graph != g)) return $"'{past.Name}' is read inside a subgraph";
                if (past.Uses.Count != 1)
                    return $"'{past.Name}' is read by {(past.Uses.Count == 0 ? "no node" : string.Join(", ", past.Uses.Select(u => u.Node.QualifiedOp).Distinct()))}, not by one {GqaDomain}.{GqaOp}";
                var (n, i) = (past.Uses[0].Node, past.Uses[0].Index);
                // longctx.LongAttention has GroupQueryAttention's slots and the same shared-buffer contract (lower-attention)
                if (!Gqa.Is(n) && !OpSchemas.LongAttention.Is(n)) return $"'{past.Name}' is read by {n.QualifiedOp}, not by one {GqaDomain}.{GqaOp}";
                if (i != slot) return $"'{past.Name}' is input {i} of {GqaOp}, not its past {(slot == GqaPastKey ? "key" : "value")}";
                if (attention is not null && !ReferenceEquals(attention, n)) return $"'{layer.PastKey.Name}' and '{layer.PastValue.Name}' feed different {GqaOp} nodes";
                attention = n;
            }
            if (attention!.Outputs.ElementAtOrDefault(GqaPresentKey) != layer.PresentKey || attention.Outputs.ElementAtOrDefault(GqaPresentValue) != layer.PresentValue)
                return $"layer {layer.Layer}: the {GqaOp} reading '{layer.PastKey.Name}' does not produce '{layer.PresentKey.Name}'/'{layer.PresentValue.Name}' directly";
            foreach (var p in new[] { layer.PresentKey, layer.PresentValue })
                if (p.Uses.Count > 0) return $"'{p.Name}' is also read inside the graph";
        }
        return null;
    }

    /// <summary>
    /// The concat-cache layers of a graph by the names in <see cref="KvNames"/>: every layer 0..N-1 needs a past key,
    /// past value, present key and present value. Returns the reason when they do not pair up.
    /// </summary>
    public static (IReadOnlyList<KvLayerValues> Layers, string? Problem) Layers(Graph g)
    {
        var past = new Dictionary<(int, KvPart), Value>();
        var present = new Dictionary<(int, KvPart), Value>();
        foreach (var v in g.Inputs)
            if (!v.IsInitializer && KvNames.Parse(v.Name, KvRole.Past) is { Layout: KvLayout.Concat } k) past[(k.Layer, k.Part)] = v;
        foreach (var v in g.Outputs)
            if (KvNames.Parse(v.Name, KvRole.Present) is { Layout: KvLayout.Concat } k) present[(k.Layer, k.Part)] = v;
        if (past.Count == 0) return ([], $"no KV-cache inputs (named like {KvNames.Describe(KvRole.Past)})");
        int n = past.Keys.Max(k => k.Item1) + 1;
        var layers = new List<KvLayerValues>();
        for (int l = 0; l < n; l++)
        {
            Value? pk = past.GetValueOrDefault((l, KvPart.Key)), pv = past.GetValueOrDefault((l, KvPart.Value));
            Value? ok = present.GetValueOrDefault((l, KvPart.Key)), ov = present.GetValueOrDefault((l, KvPart.Value));
            if (pk is null || pv is null) return ([], $"layer {l} has no past {(pk is null ? "key" : "value")} input");
            if (ok is null || ov is null) return ([], $"input '{(ok is null ? pk : pv).Name}' has no matching present output");
            layers.Add(new KvLayerValues(l, pk, pv, ok, ov));
        }
        return (layers, null);
    }
}
