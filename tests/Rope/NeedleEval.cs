using NUnit.Framework;
using System.Text.Json;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using Microsoft.ML.OnnxRuntime;

namespace LongCtx.Tests.Rope;

/// <summary>One needle prompt of recall-public's eval_L.jsonl.</summary>
public sealed record NeedlePrompt(int Id, long[] Prompt, long Expected);

/// <summary>
/// Test-side evaluator until the runtime's <c>lcc eval</c> lands: one full-prompt prefill per example through ORT (CPU),
/// inputs input_ids, attention_mask (ones), position_ids 0..L-1 and empty past_key_values.* [1, kv, 0, head]; the
/// prediction is argmax of the last logits row (full vocabulary), as in baseline.json's metric.
/// </summary>
public sealed class NeedleEval : IDisposable
{
    private readonly InferenceSession _session;
    private readonly List<(string Name, long[] Shape)> _past = [];

    public NeedleEval(Model model, int threads = 2)
    {
        var so = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        _session = new InferenceSession(OnnxWriter.ToBytes(model), so);
        foreach (var v in model.Graph.Inputs.Where(v => v.Name.StartsWith("past_key_values.", StringComparison.Ordinal)))
        {
            var dims = v.Type!.Shape!.Dims;
            _past.Add((v.Name, [1, dims[1].Value ?? throw new InvalidOperationException($"{v.Name}: kv heads not static"), 0, dims[3].Value ?? throw new InvalidOperationException($"{v.Name}: head size not static")]));
        }
    }

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
    public float[] LastLogits(long[] prompt)
    {
        int n = prompt.Length;
        var positions = Enumerable.Range(0, n).Select(i => (long)i).ToArray();
        var ones = Enumerable.Repeat(1L, n).ToArray();
        var names = new List<string> { "input_ids", "attention_mask", "position_ids" };
        var values = new List<OrtValue>
        {
            OrtValue.CreateTensorValueFromMemory(prompt, [1, n]),
            OrtValue.CreateTensorValueFromMemory(ones, [1, n]),
            OrtValue.CreateTensorValueFromMemory(positions, [1, n]),
        };
        foreach (var (name, shape) in _past)
        {
            names.Add(name);
            values.Add(OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), shape));
        }
        try
        {
            using var outs = _session.Run(new RunOptions(), names, values, ["logits"]);
            var all = outs[0].GetTensorDataAsSpan<float>();
            int vocab = (int)outs[0].GetTensorTypeAndShape().Shape[^1];
            return all[^vocab..].ToArray();
        }
        finally { foreach (var v in values) v.Dispose(); }
    }

    public bool Correct(NeedlePrompt p)
    {
        var l = LastLogits(p.Prompt);
        int best = 0;
        for (int i = 1; i < l.Length; i++) if (l[i] > l[best]) best = i;
        return best == p.Expected;
    }

    /// <summary>Per-prompt correctness (in file order).</summary>
    public bool[] Run(IReadOnlyList<NeedlePrompt> prompts) => prompts.Select(Correct).ToArray();

    public void Dispose() => _session.Dispose();
}
