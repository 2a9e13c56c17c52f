using System.Text.RegularExpressions;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Tests.Attention;

/// <summary>
/// Runs an exported decoder with ORT (CPU) step by step with its KV cache, by the usual I/O names:
/// input_ids, attention_mask, position_ids, past_key_values.N.key/value -> logits, present.N.key/value.
/// </summary>
internal sealed class DecoderRunner : IDisposable
{
    private static readonly Regex PastRx = new(@"^past_key_values\.(\d+)\.(key|value)$");
    private readonly InferenceSession _session;
    private Dictionary<string, (float[] Data, int[] Dims)> _past = [];

    public DecoderRunner(byte[] model)
    {
        var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL, IntraOpNumThreads = 1 };
        _session = new InferenceSession(model, so);
        foreach (var (name, meta) in _session.InputMetadata)
            if (PastRx.IsMatch(name))
            {
                var dims = meta.Dimensions.Select(d => d < 0 ? 0 : d).ToArray();
                dims[0] = 1;
                _past[name] = ([], dims);
            }
    }

    public int Past { get; private set; }

    /// <summary>Feeds <paramref name="tokens"/> after the cached ones; returns all outputs as float arrays.</summary>
    public Dictionary<string, (float[] Data, int[] Dims)> Step(long[] tokens)
    {
        int s = tokens.Length, total = Past + s;
        var inputs = new List<NamedOnnxValue>();
        foreach (var (name, meta) in _session.InputMetadata)
        {
            if (name == "input_ids") inputs.Add(Ints(name, meta, tokens, [1, s]));
            else if (name == "attention_mask") inputs.Add(Ints(name, meta, Enumerable.Repeat(1L, total).ToArray(), [1, total]));
            else if (name == "position_ids") inputs.Add(Ints(name, meta, Enumerable.Range(Past, s).Select(i => (long)i).ToArray(), [1, s]));
            else if (_past.TryGetValue(name, out var p))
            {
                if (meta.ElementType == typeof(Float16))
                    inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<Float16>(p.Data.Select(x => (Float16)x).ToArray(), p.Dims)));
                else inputs.Add(NamedOnnxValue.CreateFromTensor(name, new DenseTensor<float>(p.Data, p.Dims)));
            }
            else throw new InvalidOperationException($"don't know how to feed input '{name}'");
        }
        var result = new Dictionary<string, (float[], int[])>();
        using (var outs = _session.Run(inputs))
            foreach (var o in outs)
            {
                result[o.Name] = o.ElementType switch
                {
                    TensorElementType.Float16 => (o.AsTensor<Float16>().ToArray().Select(x => (float)x).ToArray(), o.AsTensor<Float16>().Dimensions.ToArray()),
                    _ => (o.AsTensor<float>().ToArray(), o.AsTensor<float>().Dimensions.ToArray()),
                };
            }
        var next = new Dictionary<string, (float[], int[])>();
        foreach (var name in _past.Keys)
        {
            var present = PastRx.Replace(name, "present.$1.$2");
            next[name] = result[present];
        }
        _past = next;
        Past = total;
        return result;
    }

    private static NamedOnnxValue Ints(string name, NodeMetadata meta, long[] data, int[] dims) =>
        meta.ElementType == typeof(int)
            ? NamedOnnxValue.CreateFromTensor(name, new DenseTensor<int>(data.Select(x => (int)x).ToArray(), dims))
            : NamedOnnxValue.CreateFromTensor(name, new DenseTensor<long>(data, dims));

    public void Dispose() => _session.Dispose();
}

/// <summary>Max |diff| per output over a prefill followed by single-token decode steps, both models fed their own caches.</summary>
internal static class Parity
{
    public static Dictionary<string, double> Run(byte[] original, byte[] candidate, int vocab, int prefill = 16, int decode = 8, int seed = 7)
    {
        var rng = new Random(seed);
        using var a = new DecoderRunner(original);
        using var b = new DecoderRunner(candidate);
        var worst = new Dictionary<string, double>();
        var steps = new List<long[]> { Enumerable.Range(0, prefill).Select(_ => (long)rng.Next(vocab)).ToArray() };
        for (int i = 0; i < decode; i++) steps.Add([rng.Next(vocab)]);
        foreach (var tokens in steps)
        {
            var ra = a.Step(tokens);
            var rb = b.Step(tokens);
            foreach (var (name, (da, dimsA)) in ra)
            {
                if (!rb.TryGetValue(name, out var vb)) throw new InvalidOperationException($"candidate lacks output '{name}'");
                if (!dimsA.SequenceEqual(vb.Dims)) throw new InvalidOperationException($"output '{name}' dims [{string.Join(",", dimsA)}] vs [{string.Join(",", vb.Dims)}]");
                double d = 0;
                for (int i = 0; i < da.Length; i++) d = Math.Max(d, Math.Abs(da[i] - vb.Data[i]));
                if (da.Any(float.IsNaN) || vb.Data.Any(float.IsNaN)) d = double.NaN;
                worst[name] = Math.Max(worst.GetValueOrDefault(name), d);
            }
        }
        return worst;
    }
}
