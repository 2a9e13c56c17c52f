using Microsoft.ML.OnnxRuntime;

namespace LongCtx.Tests.Attention;

/// <summary>Max |diff| per output over a prefill followed by single-token decode steps, both models fed their own caches.</summary>
internal static class Parity
{
    public static Dictionary<string, double> Run(byte[] original, byte[] candidate, int vocab, int prefill = 16, int decode = 8, int seed = 7)
    {
        var rng = new Random(seed);
        // no ORT graph optimisations: compare the graphs as written, one thread for reproducible reductions
        using var a = new TestDecoder(original, threads: 1, GraphOptimizationLevel.ORT_DISABLE_ALL);
        using var b = new TestDecoder(candidate, threads: 1, GraphOptimizationLevel.ORT_DISABLE_ALL);
        var worst = new Dictionary<string, double>();
        var steps = new List<long[]> { Enumerable.Range(0, prefill).Select(_ => (long)rng.Next(vocab)).ToArray() };
        for (int i = 0; i < decode; i++) steps.Add([rng.Next(vocab)]);
        foreach (var tokens in steps)
        {
            var ra = a.Step(tokens, allOutputs: true);
            var rb = b.Step(tokens, allOutputs: true);
            foreach (var (name, oa) in ra)
            {
                if (!rb.TryGetValue(name, out var ob)) throw new InvalidOperationException($"candidate lacks output '{name}'");
                if (!oa.Dims.SequenceEqual(ob.Dims)) throw new InvalidOperationException($"output '{name}' dims [{string.Join(",", oa.Dims)}] vs [{string.Join(",", ob.Dims)}]");
                double d = TestDecoder.MaxDiff(oa.Data, ob.Data);
                worst[name] = double.IsNaN(d) || double.IsNaN(worst.GetValueOrDefault(name)) ? double.NaN : Math.Max(worst.GetValueOrDefault(name), d);
            }
        }
        return worst;
    }
}
