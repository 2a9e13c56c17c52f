using System.CommandLine;
using LongCtx.Compiler;
using LongCtx.Contract;
using LongCtx.Runtime;

namespace LongCtx.Cli.Commands;

/// <summary>
/// <c>lcc calibrate MODEL --kv | --attention [--data F.jsonl] [--samples N] [--length L] [-o FILE]</c>. <c>--kv</c>: the
/// per-layer, KV head and channel absmax of the cached keys (after RoPE) and values over calibration prompts, written as a
/// versioned scale file (<see cref="KvScaleFile"/>) for <c>lcc compile --kv ... --calib SCALES</c>. <c>--attention</c>: the
/// sparse prefill pattern per layer (<see cref="CalibrateAttention"/>) for <c>lcc compile --attention auto --calib FILE</c>.
/// The two share --data, --samples, --length and -o, with defaults of their own.
/// </summary>
internal static class CalibrateCommand
{
    public const int DefaultSamples = 8, DefaultLength = 256;
    public const string DefaultScales = "kv-scales.json";

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "float model .onnx or compiled folder (compile with your --rope/--context first: keys are read as cached; --attention needs GroupQueryAttention or --attention dense)" };
        var kv = new Option<bool>("--kv") { Description = $"calibrate KV-cache quantization -> a scale file for lcc compile --kv --calib (defaults: --samples {DefaultSamples}, --length {DefaultLength}, -o {DefaultScales})" };
        var rt = new RuntimeCliOptions();
        var cmd = new Command("calibrate", "Calibrate KV-cache quantization (--kv: per layer, KV head and channel absmax of keys after RoPE and values) or sparse prefill (--attention: per layer the pattern with the least error against dense attention within a density budget)")
        { model, kv };
        CalibrateAttention.AddTo(cmd);
        rt.AddTo(cmd);
        cmd.SetAction((pr, ct) => Task.FromResult(Cli.Guard(() =>
        {
            bool doKv = pr.GetValue(kv), doAttention = pr.GetValue(CalibrateAttention.Attention);
            if (doKv == doAttention)
                throw new ArgumentException("lcc calibrate needs one of --kv or --attention (what to calibrate): lcc calibrate MODEL --kv|--attention [--data F.jsonl]");
            if (doAttention) return CalibrateAttention.Run(pr, pr.GetValue(model)!, ct);
            int n = pr.GetResult(CalibrateAttention.Samples) is { Implicit: false } ? pr.GetValue(CalibrateAttention.Samples) : DefaultSamples;
            if (n <= 0) throw new ArgumentException($"--samples {n}: must be a positive number of prompts");
            var o = rt.Build(pr) with { KvCache = KvCacheMode.Concat };
            var file = Calibrate(pr.GetValue(model)!, pr.GetValue(CalibrateAttention.Data)?.FullName, n, pr.GetValue(CalibrateAttention.Length) ?? DefaultLength, o, Console.Error.WriteLine, ct);
            var path = pr.GetResult(CalibrateAttention.Output) is { Implicit: false } ? pr.GetValue(CalibrateAttention.Output)!.FullName : Path.GetFullPath(DefaultScales);
            file.Write(path);
            Console.WriteLine($"wrote {path}: {file.Model.Layers} layers x {file.Model.KvHeads} KV heads x {file.Model.HeadDim} channels, {file.Samples} prompts, {file.Tokens} tokens ({file.Data})");
            return Cli.Ok;
        })));
        return cmd;
    }

    /// <summary>Loads MODEL (concat cache), runs the prompts and returns the scale file (also used by lcc compile --kv without --calib).</summary>
    public static KvScaleFile Calibrate(string modelPath, string? data, int samples, int length, RuntimeOptions options, Action<string> log, CancellationToken ct)
    {
        using var m = RuntimeCliOptions.Load(modelPath, options with { KvCache = KvCacheMode.Concat, ProbeChunkedPrefill = false });
        IReadOnlyList<int[]> prompts;
        string what;
        if (data is null)
        {
            int len = m.MaxContext is int max ? Math.Min(length, max) : length;
            if (len <= 0) throw new ArgumentException($"--length {length}: must be a positive number of tokens");
            prompts = KvCalibration.BuiltIn(m.VocabSize, samples, len);
            what = $"{KvCalibration.BuiltInName} ({samples} prompts of {len} random token ids)";
            log($"lcc: calibrating on the {what}: no --data given; real prompts (--data F.jsonl) give better scales");
        }
        else
        {
            prompts = KvCalibration.ReadJsonl(data, m.Tokenizer, samples);
            what = data;
        }
        var c = m.Contract;
        var identity = new KvScaleModel(m.ModelPath, Identity(m), c.Layers.Count, c.KvHeads, c.HeadDim);
        return KvCalibration.Run(m, prompts, identity, what, null, ct);
    }

    /// <summary>The hash a scale file records: a compiled folder's source (the model lcc compile read), else the file's own.</summary>
    private static string Identity(LongCtxModel m) =>
        m.Manifest?.Source?.Sha256 ?? CompileJob.HashSource(LongCtx.Compiler.OnnxIO.OnnxReader.Load(m.ModelPath), m.ModelPath).Sha256;
}
