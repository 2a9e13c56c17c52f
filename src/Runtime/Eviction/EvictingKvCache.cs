using System.Runtime.InteropServices;
using LongCtx.Contract;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace LongCtx.Runtime.Eviction;

/// <summary>
/// KV eviction (issue 12) around a <see cref="SharedBufferKvCache"/> (host buffers [1, Hkv, capacity, D] bound as past
/// and present): the graph also outputs each layer's attention query (pass kv-evict), the cache keeps the last
/// <c>window</c> query rows, and <see cref="KeyScorer"/> turns them into the attention mass every cached key receives.
/// <list type="bullet">
/// <item>snapkv / pyramidkv: at the end of a prompt (<see cref="EndOfPrompt"/>, or <see cref="Compress"/>) each layer and
/// KV head keeps the top keys by the window's max-pooled votes plus the window (<see cref="EvictionSelection.SnapKv"/>),
/// pyramidkv with a per-layer budget falling with depth (layers then hold different lengths: each layer's attention
/// gets its own seqlens_k input, <c>seqlens</c> in the policy).</item>
/// <item>actqkv: the same, scored by one activation-aware probe query per layer and cut per layer by attention mass
/// (<see cref="ActQkv"/>; layers then hold different lengths, as pyramidkv).</item>
/// <item>adakv: snapkv's votes, the layer's budget shared by its KV heads (<see cref="AdaKv.Select"/>): heads keep
/// different counts, each right-aligned to the layer's longest head, the leading rows it does not hold masked with -inf
/// through the layer's attention_bias input (<c>bias</c> in the policy; <see cref="AdaKv.AddBiasInputs"/>); pyramidkv
/// with <c>ada=1</c> shares each layer's pyramid budget the same way.</item>
/// <item>lemo: before each further prompt chunk (a step of more than one token) and at the end of the prompt, each
/// layer keeps its most informative tokens by the window's attention (<see cref="LeMo.Select"/>), at most budget: a
/// long prompt prefills against a bounded cache.</item>
/// <item>h2o: the mass is accumulated over the prompt's last window rows and then every decoded token; before a step
/// that would exceed heavy + recent, each head keeps its recent tokens and its heaviest hitters.</item>
/// </list>
/// Compaction moves each head's kept rows (ascending) forward in place. Positions continue: the op rotates a new query
/// by its cache index, so after Δ tokens of a layer are evicted every kept key is rotated Δ positions back
/// (<see cref="KeyScorer.ShiftKeys"/>), which keeps every query-key RoPE distance what it was with the full cache;
/// <see cref="NextPosition"/> keeps counting tokens. A budget at least the cache's length is a no-op, said once.
/// </summary>
public sealed class EvictingKvCache : KvCacheManager
{
    private readonly SharedBufferKvCache _inner;
    private readonly KvEvictPolicy _policy;
    private readonly string _model;
    private readonly Action<string> _note;
    private readonly string[] _outputs;
    private readonly List<float[]>[] _rows;      // per layer: the last observing query rows (H*D floats)
    private readonly List<int>[] _rowPos;        // their cache indices
    private readonly float[][][]? _mass;         // h2o: per layer, KV head, cache row: accumulated attention mass
    private readonly int[] _len;                 // per layer: rows held
    private readonly int[][]? _gap;              // adakv: per layer, KV head: leading rows the head does not hold (masked)
    private bool _compressed, _saidNoop;
    private int? _h2oPrompt;
    private long _seen;

    public EvictingKvCache(SharedBufferKvCache inner, KvEvictPolicy policy, string model, Action<string> note) : base(inner.Contract)
    {
        var c = inner.Contract;
        if (c.KvType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new RuntimeException($"{model}: KV eviction needs a float32 or float16 cache, the model's is {c.KvType}");
        if (policy.Layers.Count != c.Layers.Count || policy.Layers.Select((l, i) => l.PastKey != c.Layers[i].PastKey).Any(x => x))
            throw new RuntimeException($"{model}: longctx.json runtime.kv_evict describes {policy.Layers.Count} layers that do not match the model's {c.Layers.Count} cache inputs; recompile with lcc compile --kv-evict");
        _inner = inner;
        _policy = policy;
        _model = model;
        _note = note;
        _outputs = [.. base.OutputNames, .. policy.Layers.Select(l => l.Query)];
        _rows = c.Layers.Select(_ => new List<float[]>()).ToArray();
        _rowPos = c.Layers.Select(_ => new List<int>()).ToArray();
        _len = new int[c.Layers.Count];
        if (policy.Layers.Any(l => l.Bias is not null)) _gap = c.Layers.Select(_ => new int[c.KvHeads]).ToArray();
        if (policy.Method == "h2o") _mass = c.Layers.Select(_ => Enumerable.Range(0, c.KvHeads).Select(_ => Array.Empty<float>()).ToArray()).ToArray();
    }

    public KvEvictPolicy Policy => _policy;

    /// <summary>Rows each layer holds (equal for snapkv and h2o).</summary>
    public IReadOnlyList<int> LayerLengths => _len;

    /// <summary>Rows each KV head of layer <paramref name="layer"/> holds (adakv: different per head; else the layer's length).</summary>
    public IReadOnlyList<int> HeadLengths(int layer) => Enumerable.Range(0, Contract.KvHeads).Select(g => _len[layer] - (_gap?[layer][g] ?? 0)).ToArray();

    /// <summary>Tokens evicted so far (all layers).</summary>
    public long Evicted { get; private set; }

    public override int Length => _inner.Length;
    public override int NextPosition => checked((int)_seen);
    public override int? Capacity => null; // an evicting cache is bounded by the policy, not the model's positions
    public override long Bytes => _inner.Bytes;
    public override IReadOnlyList<string> OutputNames => _outputs;
    public override IReadOnlyList<OrtValue>? OutputBuffers => _inner.OutputBuffers;

    private int Observed => _policy.Method == "h2o" ? Math.Max(_policy.Window, 32) : _policy.Window;

    public override void Reserve(int newTokens)
    {
        if (_policy.Method == "lemo" && newTokens > 1) { EliminateBeforeChunk(); return; }
        if (_mass is null || !_compressed) return;
        int budget = H2oBudget(out int heavy, out int recent);
        if (_inner.Length + newTokens <= budget) return;
        // h2o: make room so the step ends at heavy + recent
        Compact(l => Enumerable.Range(0, Contract.KvHeads).Select(g => EvictionSelection.H2o(_mass[l][g], _len[l], Math.Max(0, heavy - newTokens), recent)).ToArray());
    }

    public override void AddInputs(List<string> names, List<OrtValue> values, List<OrtValue> owned, int newTokens)
    {
        _inner.AddInputs(names, values, owned, newTokens);
        for (int l = 0; l < _len.Length; l++)
        {
            if (_policy.Layers[l].Seqlens is not { } input) continue;
            var v = OrtValue.CreateTensorValueFromMemory(new[] { _len[l] + newTokens - 1 }, [1]);
            owned.Add(v); names.Add(input); values.Add(v);
        }
        if (_gap is not null) AdaKv.AddBiasInputs(_policy.Layers, _gap, Contract.KvType, newTokens, _inner.Length + newTokens, names, values, owned);
    }

    public override void Accept(IReadOnlyList<OrtValue> outputs, int newTokens)
    {
        int kv = base.OutputNames.Count; // the cache outputs come first, then the queries
        try
        {
            for (int l = 0; l < _len.Length; l++) Observe(l, outputs[kv + l], newTokens);
        }
        finally
        {
            for (int i = kv; i < outputs.Count; i++) outputs[i].Dispose();
        }
        _inner.Accept(outputs.Take(kv).ToArray(), newTokens);
        for (int l = 0; l < _len.Length; l++) _len[l] += newTokens;
        _seen += newTokens;
        if (_mass is not null && _compressed) Accumulate(newTokens);
    }

    /// <summary>The end of a prompt: snapkv / pyramidkv compress now; h2o scores the prompt and starts its fixed budget.</summary>
    public override void EndOfPrompt() => Compress();

    /// <summary>Compresses the cache now (the method's rule over the observation window's votes).</summary>
    public void Compress()
    {
        if (_inner.Length == 0) return;
        if (_mass is not null)
        {
            int budget = H2oBudget(out int heavy, out int recent);
            for (int l = 0; l < _len.Length && !_compressed; l++) // the prompt's last rows; later tokens are added as they come
            {
                for (int g = 0; g < Contract.KvHeads; g++) Array.Resize(ref _mass[l][g], _len[l]);
                Score(l, _rows[l], _rowPos[l], _mass[l]);
            }
            _compressed = true;
            if (budget >= _inner.Length) { SayNoop(budget); return; }
            Compact(l => Enumerable.Range(0, Contract.KvHeads).Select(g => EvictionSelection.H2o(_mass[l][g], _len[l], heavy, recent)).ToArray());
            return;
        }
        int mean = KvEvictPolicy.Tokens(_policy.Budget, checked((int)_seen));
        int[] budgets = _policy.Method == "pyramidkv"
            ? EvictionSelection.PyramidBudgets(mean, _policy.Window, _len.Length, _policy.Beta)
            : Enumerable.Repeat(mean, _len.Length).ToArray();
        if (budgets.Zip(_len).All(x => x.First >= x.Second)) { SayNoop(mean); return; }
        Compact(l =>
        {
            if (_policy.Method == "actqkv") return ActQkv.CutOff(ProbeScores(l), _len[l], _policy.Window, budgets[l], _policy.Mass);
            if (_policy.Method == "lemo") return LeMoKeep(l, budgets[l]);
            var votes = NewScores(l);
            Score(l, _rows[l], _rowPos[l], votes);
            if (_gap is not null) return AdaKv.Select(votes, _len[l], _policy.Window, budgets[l], _policy.Pool, _policy.Floor, _gap[l]);
            return votes.Select(v => EvictionSelection.SnapKv(v, _len[l], _policy.Window, budgets[l], _policy.Pool)).ToArray();
        });
    }

    /// <summary>lemo, before a further prompt chunk: layers holding more than the budget (of the tokens seen so far) eliminate down to it.</summary>
    private void EliminateBeforeChunk()
    {
        int budget = KvEvictPolicy.Tokens(_policy.Budget, checked((int)_seen));
        if (_len.All(n => n <= budget)) return;
        Compact(l => LeMoKeep(l, budget));
    }

    /// <summary>lemo: the rows layer <paramref name="l"/> keeps (the same for every KV head: a token leaves the layer whole).</summary>
    private int[][] LeMoKeep(int l, int budget)
    {
        var votes = NewScores(l);
        Score(l, _rows[l], _rowPos[l], votes);
        var row = LeMo.Select(votes, _len[l], _policy.Window, budget, _policy.Tau);
        return votes.Select(_ => row).ToArray();
    }

    /// <summary>Per KV head of layer <paramref name="layer"/>, the attention mass the observation window's rows give each cached row now.</summary>
    public float[][] KeyScores(int layer)
    {
        var votes = NewScores(layer);
        Score(layer, _rows[layer], _rowPos[layer], votes);
        return votes;
    }

    /// <summary>actqkv: per KV head of layer <paramref name="layer"/>, the attention mass the window's rows give each cached row now, each row weighted by its activation bias (<see cref="ActQkv.RowWeights"/>).</summary>
    public float[][] ProbeScores(int layer)
    {
        var votes = NewScores(layer);
        Score(layer, _rows[layer], _rowPos[layer], votes, ActQkv.RowWeights(_rows[layer], _rowPos[layer], _policy.Layers[layer]));
        return votes;
    }

    /// <summary>Keeps exactly the cached rows <paramref name="rows"/> (ascending) in every layer and head, as a method's selection would.</summary>
    public void Keep(IReadOnlyList<int> rows)
    {
        if (rows.Count == 0 || rows.Zip(rows.Skip(1)).Any(p => p.First >= p.Second) || rows[0] < 0 || _len.Any(n => rows[^1] >= n))
            throw new ArgumentException($"{_model}: rows to keep must be ascending and below the {_len.Min()} cached rows");
        if (_gap is not null && _gap.Any(l => l.Any(p => p > 0)))
            throw new InvalidOperationException($"{_model}: the heads hold different rows (adakv); keeping the same rows in every head would unmask dropped ones");
        var keep = Enumerable.Repeat(rows.ToArray(), Contract.KvHeads).ToArray();
        Compact(_ => keep);
    }

    /// <summary>h2o's heavy + recent; fractions are of the first prompt (fixed when it ends, so the budget stays put while decoding).</summary>
    private int H2oBudget(out int heavy, out int recent)
    {
        _h2oPrompt ??= checked((int)Math.Min(_seen, int.MaxValue));
        int prompt = _h2oPrompt.Value;
        heavy = KvEvictPolicy.Tokens(_policy.Heavy, prompt);
        recent = Math.Max(1, KvEvictPolicy.Tokens(_policy.Recent, prompt));
        return heavy + recent;
    }

    private void SayNoop(int budget)
    {
        if (_saidNoop) return;
        _saidNoop = true;
        _note($"{_model}: --kv-evict {_policy.Method}: the budget ({budget} tokens) is at least the {_inner.Length} cached tokens; nothing is evicted");
    }

    private float[][] NewScores(int l) => Enumerable.Range(0, Contract.KvHeads).Select(_ => new float[_len[l]]).ToArray();

    /// <summary>Keeps the last <see cref="Observed"/> query rows of layer <paramref name="l"/> from a step's query output [1, S, H*D].</summary>
    private void Observe(int l, OrtValue query, int newTokens)
    {
        var layer = _policy.Layers[l];
        int width = layer.Heads * layer.HeadDim, keep = Math.Min(newTokens, Observed);
        var data = Floats(query, newTokens * width);
        for (int i = newTokens - keep; i < newTokens; i++)
        {
            _rows[l].Add(data.AsSpan(i * width, width).ToArray());
            _rowPos[l].Add(_len[l] + i);
        }
        int drop = _rows[l].Count - Observed;
        if (drop > 0) { _rows[l].RemoveRange(0, drop); _rowPos[l].RemoveRange(0, drop); }
    }

    /// <summary>h2o during decode: the new rows' attention over the whole layer adds to the accumulated mass.</summary>
    private void Accumulate(int newTokens)
    {
        for (int l = 0; l < _len.Length; l++)
        {
            for (int g = 0; g < Contract.KvHeads; g++) Array.Resize(ref _mass![l][g], _len[l]);
            int n = Math.Min(newTokens, _rows[l].Count);
            Score(l, _rows[l].GetRange(_rows[l].Count - n, n), _rowPos[l].GetRange(_rowPos[l].Count - n, n), _mass![l]);
        }
    }

    private void Score(int l, IReadOnlyList<float[]> rows, IReadOnlyList<int> positions, float[][] into, IReadOnlyList<double[]>? rowWeights = null)
    {
        var buffer = _inner.OutputBuffers![2 * l];
        ReadOnlySpan<float> keys = Contract.KvType == TensorElementType.Float ? buffer.GetTensorDataAsSpan<float>()
            : Floats(buffer, Contract.KvHeads * _inner.BufferLength * Contract.HeadDim);
        KeyScorer.Accumulate(rows, positions, keys, _inner.BufferLength, _len[l], _policy.Layers[l], into, _gap?[l], rowWeights);
    }

    /// <summary>
    /// Per layer, per KV head, the ascending rows to keep; moves them forward and re-rotates keys. Heads that keep fewer
    /// rows than the layer's longest (adakv) are right-aligned to it: their leading pad rows are zeroed and masked.
    /// </summary>
    private void Compact(Func<int, int[][]> select)
    {
        int cap = _inner.BufferLength, d = Contract.HeadDim, es = DecoderContract.ElementSize(Contract.KvType);
        long row = (long)d * es;
        for (int l = 0; l < _len.Length; l++)
        {
            var keep = select(l);
            int n = keep.Max(k => k.Length), delta = _len[l] - n;
            if (Enumerable.Range(0, keep.Length).All(g => keep[g].Length == _len[l] - (_gap?[l][g] ?? 0))) continue;
            for (int kv = 0; kv < 2; kv++)
            {
                var data = _inner.OutputBuffers![2 * l + kv].GetTensorMutableRawData();
                for (int g = 0; g < keep.Length; g++)
                {
                    long head = (long)g * cap * row;
                    int pad = n - keep[g].Length;
                    if (pad == 0)
                    {
                        for (int r = 0; r < n; r++)
                            if (keep[g][r] != r) data.Slice((int)(head + keep[g][r] * row), (int)row).CopyTo(data.Slice((int)(head + r * row)));
                    }
                    else // rows may move either way: gather first
                    {
                        var kept = new byte[keep[g].Length * row];
                        for (int r = 0; r < keep[g].Length; r++) data.Slice((int)(head + keep[g][r] * row), (int)row).CopyTo(kept.AsSpan((int)(r * row)));
                        data.Slice((int)head, (int)(pad * row)).Clear();
                        kept.AsSpan().CopyTo(data.Slice((int)(head + pad * row)));
                    }
                    if (kv == 0) ShiftHead(data.Slice((int)(head + pad * row), (int)((n - pad) * row)), n - pad, delta, _policy.Layers[l]);
                    if (_gap is not null && kv == 0) _gap[l][g] = pad;
                }
            }
            if (_mass is not null)
                for (int g = 0; g < keep.Length; g++) _mass[l][g] = keep[g].Select(j => _mass[l][g][j]).ToArray();
            for (int r = 0; r < _rowPos[l].Count; r++) _rowPos[l][r] -= delta; // the window is always kept: its rows move back by delta
            _len[l] = n;
            Evicted += delta;
        }
        _inner.Truncate(_len.Max());
    }

    private void ShiftHead(Span<byte> rows, int n, int delta, KvEvictLayer layer)
    {
        if (layer.InvFreq is null) return;
        if (Contract.KvType == TensorElementType.Float) { KeyScorer.ShiftKeys(MemoryMarshal.Cast<byte, float>(rows), n, Contract.HeadDim, delta, layer); return; }
        var half = MemoryMarshal.Cast<byte, Half>(rows);
        var f = new float[half.Length];
        for (int i = 0; i < f.Length; i++) f[i] = (float)half[i];
        KeyScorer.ShiftKeys(f, n, Contract.HeadDim, delta, layer);
        for (int i = 0; i < f.Length; i++) half[i] = (Half)f[i];
    }

    /// <summary>The first <paramref name="count"/> elements of a float32 / float16 tensor as float32.</summary>
    private static float[] Floats(OrtValue v, int count)
    {
        if (v.GetTensorTypeAndShape().ElementDataType == TensorElementType.Float) return v.GetTensorDataAsSpan<float>()[..count].ToArray();
        var h = v.GetTensorDataAsSpan<Float16>()[..count];
        var f = new float[count];
        for (int i = 0; i < count; i++) f[i] = (float)h[i];
        return f;
    }

    public override void Clear()
    {
        _inner.Clear();
        Array.Clear(_len);
        foreach (var r in _rows) r.Clear();
        foreach (var p in _rowPos) p.Clear();
        if (_gap is not null) foreach (var g in _gap) Array.Clear(g);
        if (_mass is not null) foreach (var m in _mass) for (int g = 0; g < m.Length; g++) m[g] = [];
        _compressed = false;
        _h2oPrompt = null;
        _seen = 0;
        Evicted = 0;
    }

    protected override void Dispose(bool disposing) => _inner.Dispose();
}
