using Google.Protobuf;
using LongCtx.Compiler.Analysis;
using LongCtx.Compiler.Attention;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Runtime;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;


namespace LongCtx.Cli.Calibration;

/// <summary>What calibration is measured on: the model's shape and identity.</summary>
public sealed record CapturedModel(string Name, string Sha256, int Layers, int Heads, int KvHeads, int HeadDim);

/// <summary>
/// Captures every layer's attention inputs for a prompt: a copy of the compiled model (canonical GroupQueryAttention or
/// dense longctx.LongAttention blocks, RoPE inside the op) with each block's query, key and value added as graph outputs
/// runs one prefill on ONNX Runtime's CPU EP (batch 1, empty cache); cos/sin are the blocks' constant tables.
/// </summary>
public sealed class AttentionCapture : IDisposable
{
    private readonly InferenceSession _session;
    private readonly DecoderContract _contract;
    private readonly List<(AttentionBlock Block, string Q, string K, string V, float[]? Cos, float[]? Sin, int MaxPos)> _blocks = [];

    public CapturedModel Model { get; }

    /// <summary>The vocabulary size (last dim of logits).</summary>
    public int VocabSize => _contract.VocabSize;

    /// <summary>The fewest RoPE rows of any block (the longest prompt it can rotate), null without RoPE in the op.</summary>
    public int? MaxPositions => _blocks.Where(b => b.MaxPos > 0).Select(b => (int?)b.MaxPos).Min();

    public AttentionCapture(string path, string library)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, LongCtx.Contract.LongCtxFiles.Model) : path;
        if (!File.Exists(file)) throw new ArgumentException($"{path}: no model there; give a compiled folder or its model.onnx (lcc compile MODEL -o DIR)");
        var model = OnnxReader.Load(file);
        var found = AttentionDiscovery.Discover(model);
        if (found.Blocks.Count == 0 || found.Unrecognised.Count > 0)
            throw new ArgumentException($"{path}: no attention blocks lcc can read{(found.Unrecognised.Count > 0 ? " (" + found.Unrecognised[0] + ")" : "")}; calibrate a model compiled by lcc compile");
        foreach (var b in found.Blocks)
        {
            var n = b.Match.Anchor;
            bool la = n.OpType == "LongAttention";
            if (!(la || n.OpType == "GroupQueryAttention") || la && n.StringAttr("pattern", "dense") != "dense")
                throw new ArgumentException($"{path}: layer {b.Layer} runs {(la ? "LongAttention pattern " + n.StringAttr("pattern", "dense") : b.Form)}; "
                    + "calibrate a model compiled with GroupQueryAttention or --attention dense (lcc compile MODEL -o DIR --attention dense)");
            if (n.Inputs.Count < 3 || n.Inputs[1] is null || n.Inputs[2] is null)
                throw new ArgumentException($"{path}: layer {b.Layer} has packed QKV; calibration needs separate query, key and value inputs");
            bool rotary = n.IntAttr("do_rotary", 0) == 1;
            if (rotary && n.IntAttr("rotary_interleaved", 0) != 0)
                throw new ArgumentException($"{path}: layer {b.Layer} uses interleaved RoPE; calibration handles rotate_half RoPE only");
            var cos = rotary ? n.Inputs.ElementAtOrDefault(7)?.Const : null;
            var sin = rotary ? n.Inputs.ElementAtOrDefault(8)?.Const : null;
            if (rotary && (cos is null || sin is null || cos.Element != ElementType.Float))
                throw new ArgumentException($"{path}: layer {b.Layer}: the cos/sin caches are not constant float32 tables; calibrate a float32 model");
            _blocks.Add((b, n.Inputs[0]!.Name, n.Inputs[1]!.Name, n.Inputs[2]!.Name, cos?.ToFloats(), sin?.ToFloats(), cos is null ? 0 : (int)cos.Dims[0]));
        }
        var first = found.Blocks[0];
        using (var sha = System.Security.Cryptography.SHA256.Create())
        using (var stream = File.OpenRead(file))
            Model = new CapturedModel(Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(file))) is { Length: > 0 } dir && Directory.Exists(path) ? dir : Path.GetFileName(file),
                Convert.ToHexStringLower(sha.ComputeHash(stream)), found.Blocks.Count, first.NumHeads, first.KvNumHeads, first.HeadDim);

        var proto = Onnx.ModelProto.Parser.ParseFrom(OnnxWriter.ToBytes(model));
        var have = proto.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var name in _blocks.SelectMany(b => new[] { b.Q, b.K, b.V }).Distinct())
            if (have.Add(name)) proto.Graph.Output.Add(new Onnx.ValueInfoProto { Name = name });
        var so = new SessionOptions();
        if (File.Exists(library)) so.RegisterCustomOpLibrary(library);
        try
        {
            _session = new InferenceSession(proto.ToByteArray(), so);
            _contract = DecoderContract.Discover(Model.Name, _session.InputMetadata, _session.OutputMetadata);
        }
        catch (Exception e) when (e is OnnxRuntimeException or RuntimeException)
        {
            throw new InvalidOperationException($"{path}: cannot run the model for calibration: {Commands.Cli.OneLine(e.Message.Split('\n')[0])}");
        }
        if (_contract.CacheKind != KvCacheKind.Concat || _contract.KvType != TensorElementType.Float)
            throw new ArgumentException($"{path}: calibration runs float32 models with a past_key_values cache; this one has a {_contract.CacheKind} {_contract.KvType} cache");
    }

    /// <summary>Every layer's inputs for one prompt (one prefill).</summary>
    public IReadOnlyList<LayerInputs> Run(int[] prompt)
    {
        int S = prompt.Length;
        var feeds = new Dictionary<string, OrtValue>();
        try
        {
            long[] ids = prompt.Select(t => (long)t).ToArray();
            feeds[_contract.InputIds] = Ints(ids, _contract.InputIdsType, [1, S]);
            if (_contract.AttentionMask is { } m) feeds[m] = Ints(Enumerable.Repeat(1L, S).ToArray(), _contract.AttentionMaskType, [1, S]);
            if (_contract.PositionIds is { } p) feeds[p] = Ints(Enumerable.Range(0, S).Select(i => (long)i).ToArray(), _contract.PositionIdsType, [1, S]);
            foreach (var l in _contract.Layers)
                foreach (var name in new[] { l.PastKey, l.PastValue })
                    feeds[name] = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, _contract.KvHeads, 0, _contract.HeadDim]);
            var names = _blocks.SelectMany(b => new[] { b.Q, b.K, b.V }).Distinct().ToList();
            using var results = RunSession(feeds, names);
            var got = names.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => results[x.i].GetTensorDataAsSpan<float>().ToArray());
            return _blocks.Select(b => new LayerInputs(b.Block.Layer, b.Block.NumHeads, b.Block.KvNumHeads, b.Block.HeadDim, S,
                got[b.Q], got[b.K], got[b.V], b.Cos, b.Sin, b.MaxPos, b.Block.Scale > 0 ? b.Block.Scale : 1 / Math.Sqrt(b.Block.HeadDim))).ToList();
        }
        finally { foreach (var v in feeds.Values) v.Dispose(); }
    }

    private IDisposableReadOnlyCollection<OrtValue> RunSession(Dictionary<string, OrtValue> feeds, List<string> names)
    {
        try { return _session.Run(new RunOptions(), feeds, names); }
        catch (OnnxRuntimeException e) { throw new InvalidOperationException($"{Model.Name}: calibration prefill failed: {Commands.Cli.OneLine(e.Message.Split('\n')[0])}"); }
    }

    private static OrtValue Ints(long[] data, TensorElementType type, long[] shape) => type == TensorElementType.Int32
        ? OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(data, x => (int)x), shape)
        : OrtValue.CreateTensorValueFromMemory(data, shape);

    public void Dispose() => _session.Dispose();
}
