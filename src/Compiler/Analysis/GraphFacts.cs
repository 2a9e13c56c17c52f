using LongCtx.Compiler.IR;
using LongCtx.Compiler.Patterns;

namespace LongCtx.Compiler.Analysis;

/// <summary>Small read-only queries discovery needs: static elements of shape tensors, ancestor inputs, op presence.</summary>
public static class GraphFacts
{
    /// <summary>
    /// Elements of a 1-D shape tensor as far as they are static: a constant, or a Concat (axis 0) of constants and
    /// dynamic scalars (Unsqueeze of a scalar counts as one unknown element). Null when the length is not known.
    /// </summary>
    public static long?[]? ShapeElements(Value? shape)
    {
        shape = Noise.Skip(shape);
        if (Consts.Ints(shape) is { } c) return c.Select(x => (long?)x).ToArray();
        if (shape?.Producer is { OpType: "Concat", Domain: "" } cat && cat.IntAttr("axis", 0) == 0)
        {
            var parts = new List<long?>();
            foreach (var part in cat.Inputs)
            {
                if (Consts.Ints(part) is { } pc) parts.AddRange(pc.Select(x => (long?)x));
                else if (Noise.Skip(part)?.Producer is { OpType: "Unsqueeze" }) parts.Add(null);
                else return null;
            }
            return parts.ToArray();
        }
        return null;
    }

    /// <summary>Graph inputs <paramref name="v"/> depends on, nearest first (breadth-first over producers).</summary>
    public static List<Value> AncestorInputs(Value v, int maxNodes = 4000)
    {
        var result = new List<Value>();
        var seen = new HashSet<Value> { v };
        var queue = new Queue<Value>([v]);
        int visited = 0;
        while (queue.Count > 0 && visited++ < maxNodes)
        {
            var x = queue.Dequeue();
            if (x.IsGraphInput && !x.IsInitializer) { result.Add(x); continue; }
            if (x.Producer is { } p)
                foreach (var i in p.Inputs)
                    if (i is not null && seen.Add(i)) queue.Enqueue(i);
        }
        return result;
    }

    /// <summary>Op types of the nodes <paramref name="v"/> depends on (bounded walk).</summary>
    public static HashSet<string> AncestorOps(Value v, int maxNodes = 4000)
    {
        var ops = new HashSet<string>(StringComparer.Ordinal);
        var seen = new HashSet<Node>();
        var stack = new Stack<Value>([v]);
        while (stack.Count > 0 && seen.Count < maxNodes)
        {
            var x = stack.Pop();
            if (x.Producer is not { } p || !seen.Add(p)) continue;
            ops.Add(p.QualifiedOp);
            foreach (var i in p.Inputs) if (i is not null) stack.Push(i);
        }
        return ops;
    }

    /// <summary>The graph input the mask derives from: one named like a mask if any, else the nearest.</summary>
    public static string? MaskInput(Value? mask)
    {
        if (mask is null) return null;
        var inputs = AncestorInputs(mask);
        return (inputs.FirstOrDefault(i => i.Name.Contains("mask", StringComparison.OrdinalIgnoreCase)) ?? inputs.FirstOrDefault())?.Name;
    }
}
