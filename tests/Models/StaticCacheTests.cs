using LongCtx.Compiler.OnnxIO;
using LongCtx.Models;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using NUnit.Framework;

namespace LongCtx.Tests.Models;

/// <summary>Opset-24 TensorScatter static cache: decode through the cache equals the torch form (same weights).</summary>
[TestFixture]
public sealed class StaticCacheTests
{
    private const int CacheLength = 16;
    private static readonly long[] Tokens = [5, 17, 3, 99, 42, 7, 64, 1, 120, 33];

    private sealed class StaticRunner(InferenceSession s, DecoderConfig c) : IDisposable
    {
        public float[][]? Caches;

        /// <summary>Writes <paramref name="tokens"/> at <paramref name="at"/>; returns the logits of the last token.</summary>
        public float[] Run(long[] tokens, int at)
        {
            int n = tokens.Length, w = c.KvWidth;
            Caches ??= Enumerable.Range(0, 2 * c.Layers).Select(_ => new float[CacheLength * w]).ToArray();
            var names = new List<string> { "input_ids", "position_ids", "write_indices", "nonpad_kv_seqlen" };
            var values = new List<OrtValue>
            {
                OrtValue.CreateTensorValueFromMemory(tokens.ToArray(), [1, n]),
                OrtValue.CreateTensorValueFromMemory(Enumerable.Range(at, n).Select(i => (long)i).ToArray(), [1, n]),
                OrtValue.CreateTensorValueFromMemory(new long[] { at }, [1]),
                OrtValue.CreateTensorValueFromMemory(new long[] { at + n }, [1]),
            };
            for (int l = 0; l < c.Layers; l++)
            {
                names.Add($"key_cache.{l}"); values.Add(OrtValue.CreateTensorValueFromMemory(Caches[2 * l].ToArray(), [1, CacheLength, w]));
                names.Add($"value_cache.{l}"); values.Add(OrtValue.CreateTensorValueFromMemory(Caches[2 * l + 1].ToArray(), [1, CacheLength, w]));
            }
            var outs = new List<string> { "logits" };
            for (int l = 0; l < c.Layers; l++) { outs.Add($"updated_key_cache.{l}"); outs.Add($"updated_value_cache.{l}"); }
            using var ro = new RunOptions();
            using var r = s.Run(ro, names, values, outs);
            foreach (var v in values) v.Dispose();
            for (int i = 0; i < 2 * c.Layers; i++) Caches[i] = r[i + 1].GetTensorDataAsSpan<float>().ToArray();
            var logits = r[0].GetTensorDataAsSpan<float>().ToArray();
            return logits[^c.Vocab..];
        }

        public void Dispose() => s.Dispose();
    }

    [TestCase(false)]
    [TestCase(true)]
    public void Static_cache_decoder_matches_torch_form(bool partialInterleaved)
    {
        var c = new DecoderConfig(Seed: 21);
        if (partialInterleaved) c = c with { HeadDim = 32, RotaryDim = 16, Interleaved = true };
        var bytes = OnnxWriter.ToBytes(Opset24Decoder.BuildStaticCache(c, CacheLength));
        Assert.That(OnnxWriter.ToBytes(Opset24Decoder.BuildStaticCache(c, CacheLength)), Is.EqualTo(bytes), "deterministic");
        using var st = new StaticRunner(new InferenceSession(bytes), c);
        st.Run(Tokens[..6], 0);
        float[] got = [];
        for (int i = 6; i < Tokens.Length; i++) got = st.Run([Tokens[i]], i);

        using var torch = new TestDecoder(OnnxWriter.ToBytes(TorchStyleDecoder.Build(c)), threads: 0);
        var want = torch.LastLogits(Tokens);
        double d = TestDecoder.MaxDiff(want, got);
        TestContext.Out.WriteLine($"static cache vs torch: max|diff| {d:E2}");
        Assert.That(d, Is.LessThan(1e-4));

        using var fresh = new StaticRunner(new InferenceSession(bytes), c);
        Assert.That(TestDecoder.MaxDiff(fresh.Run(Tokens, 0), want), Is.LessThan(1e-4), "one prefill of all tokens");
    }
}
