using NUnit.Framework;
using System.Text.Json;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using Microsoft.ML.OnnxRuntime;

namespace LongCtx.Tests.Rope;

/// <summary>One needle prompt of recall-public's eval_L.jsonl.</summary>
public sealed record NeedlePrompt(int Id, long[] Prompt, long Expected);

/// <summary>
/// Test-side evaluator (independent of the runtime's <c>lcc eval</c>): one full-prompt prefill per example through
/// <see cref="TestDecoder"/> (ORT CPU, empty cache, positions 0..L-1); the prediction is argmax of the last logits row
/// (full vocabulary), as in baseline.json's metric.
/// </summary>
public sealed class NeedleEval : IDisposable
{
    private readonly TestDecoder _decoder;

    public NeedleEval(Model model, int threads = 2) =>
        _decoder = new TestDecoder(OnnxWriter.ToBytes(model), threads, GraphOptimizationLevel.ORT_ENABLE_ALL);

    public static IReadOnlyList<NeedlePrompt> Load(string path, int limit = int.MaxValue)
    {
        var r = new List<NeedlePrompt>();
        foreach (var line in File.ReadLines(path))
        {
            if (r.Count >= limit) break;
            if (line.Length == 0) continue;
            using var d = JsonDocument.Parse(line);
            var e = d.RootElement;
            r.Add(new NeedlePrompt(e.GetProperty("id").GetInt32(), e.GetProperty("prompt").EnumerateArray().Select(x => x.GetInt64()).ToArray(), e.GetProperty("expected").GetInt64()));
        }
        return r;
    }

    /// <summary>Logits of the last prompt position.</summary>
    public float[] LastLogits(long[] prompt) => _decoder.LastLogits(prompt);

    public bool Correct(NeedlePrompt p)
    {
        var l = LastLogits(p.Prompt);
        int best = 0;
        for (int i = 1; i < l.Length; i++) if (l[i] > l[best]) best = i;
        return best == p.Expected;
    }

    /// <summary>Per-prompt correctness (in file order).</summary>
    public bool[] Run(IReadOnlyList<NeedlePrompt> prompts) => prompts.Select(Correct).ToArray();

    public void Dispose() => _decoder.Dispose();
}
