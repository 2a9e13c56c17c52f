using LongCtx.Compiler.Capabilities;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Contract;
using Microsoft.ML.OnnxRuntime;

namespace LongCtx.Runtime;

/// <summary>
/// A loaded decoder: one ONNX Runtime session plus its discovered I/O contract. Thread-safe:
/// any number of <see cref="Generator"/>s (each with its own KV cache) may run on it at once.
/// </summary>
public sealed class LongCtxModel : IDisposable
{
    private readonly InferenceSession _session;
    private readonly List<string> _notes = [];

    private LongCtxModel(string name, string modelPath, InferenceSession session, ExecutionProviderKind provider,
        DecoderContract contract, LongCtxManifest? manifest, IReadOnlyDictionary<string, long> opsets,
        ITokenizer? tokenizer, RuntimeOptions options)
    {
        Name = name;
        ModelPath = modelPath;
        _session = session;
        Provider = provider;
        Contract = contract;
        Manifest = manifest;
        Opsets = opsets;
        Tokenizer = tokenizer;
        UseIoBinding = options.IoBinding ?? provider != ExecutionProviderKind.Cpu;
        KvMemory = provider == ExecutionProviderKind.Cpu
            ? OrtMemoryInfo.DefaultInstance
            : new OrtMemoryInfo("Cuda", OrtAllocatorType.DeviceAllocator, options.DeviceId, OrtMemType.Default);
        MaxContext = contract.StaticCapacity ?? Runtime.MaxContext ?? Runtime.MaxPositionEmbeddings;
        Streaming = StreamingPolicy.From(Runtime, name);
        try { Evict = KvEvictPolicy.From(Runtime, name); }
        catch (ManifestException e) { throw new RuntimeException(e.Message, e); }
        _log = options.Log ?? (s => Console.Error.WriteLine("lcc: " + s));
    }

    private readonly Action<string> _log;

    /// <summary>GemFilter's filter of a model compiled with <c>--token-filter</c> (null otherwise): a fresh sequence's prompt goes through it first.</summary>
    public Eviction.GemFilter? TokenFilter { get; private set; }

    /// <summary>Whether this is GemFilter's filter model (its "logits" output is a query, not a vocabulary).</summary>
    internal bool IsTokenFilter { get; set; }

    /// <summary>The KV eviction of a model compiled with <c>--kv-evict</c> (null otherwise); its generators get an <see cref="Eviction.EvictingKvCache"/>.</summary>
    public KvEvictPolicy? Evict { get; }

    /// <summary>The streaming KV policy of a model compiled with <c>--attention streaming</c> (null otherwise).</summary>
    public StreamingPolicy? Streaming { get; }

    /// <summary>Most tokens a streaming cache takes per call (its buffer is sink + window + this).</summary>
    public int StreamingStep => Math.Max(64, Streaming?.Window ?? 0);

    /// <summary>What errors call the model (its file or folder name).</summary>
    public string Name { get; }
    public string ModelPath { get; }
    public ExecutionProviderKind Provider { get; }
    public DecoderContract Contract { get; }
    public int VocabSize => Contract.VocabSize;

    /// <summary>The compiled folder's longctx.json; null for a bare .onnx.</summary>
    public LongCtxManifest? Manifest { get; }

    /// <summary>The "runtime" section of longctx.json (empty for a bare .onnx).</summary>
    public RuntimeSection Runtime => Manifest?.Runtime ?? EmptyRuntime;

    private static readonly RuntimeSection EmptyRuntime = new();
    public IReadOnlyDictionary<string, long> Opsets { get; }

    /// <summary>Most tokens (prompt + generated) the model accepts, when known (static cache, or longctx.json).</summary>
    public int? MaxContext { get; }

    /// <summary>Whether decoder calls run through an IOBinding (KV outputs stay in <see cref="KvMemory"/>).</summary>
    public bool UseIoBinding { get; }

    /// <summary>Where KV-cache outputs live between steps when <see cref="UseIoBinding"/> is on.</summary>
    internal OrtMemoryInfo KvMemory { get; }

    /// <summary>The KV-cache manager generators get: <see cref="KvCacheMode.Shared"/> or <see cref="KvCacheMode.Concat"/> (the contract's own cache: concat or static).</summary>
    public KvCacheMode KvCache { get; private set; } = KvCacheMode.Concat;

    /// <summary>Why the shared KV buffer is not used (auto mode), or null.</summary>
    public string? KvCacheNote { get; private set; }

    /// <summary>Initial length in tokens of each generator's shared KV buffer.</summary>
    public int SharedBufferLength { get; private set; }

    /// <summary>Whether shared buffers double when full (no explicit --max-context, host memory).</summary>
    public bool SharedBufferGrows { get; private set; }

    /// <summary>Default shared buffer length when neither the options nor the model give one.</summary>
    public const int DefaultSharedBufferLength = 4096;

    /// <summary>Whether a multi-token chunk may follow a non-empty past (recorded by lcc compile, else probed on load).</summary>
    public bool SupportsChunkedPrefill { get; private set; } = true;

    /// <summary>Text tokenizer when the model folder has one; id-level models have none.</summary>
    public ITokenizer? Tokenizer { get; }

    /// <summary>One-line notes gathered while loading (EP fallbacks, prefill mode).</summary>
    public IReadOnlyList<string> Notes => _notes;

    /// <summary>Identity of the model's weights and graph that KV snapshots carry (<see cref="Sessions.ModelIdentity"/>); computed on first use.</summary>
    public string ModelHash => _modelHash ??= Sessions.ModelIdentity.Compute(ModelPath);
    private string? _modelHash;

    public Generator CreateGenerator() => new(this, CreateCache());

    /// <summary>A generator on a cache the caller built (a custom <see cref="KvCacheManager"/>); the generator owns it.</summary>
    public Generator CreateGenerator(KvCacheManager cache) =>
        ReferenceEquals(cache.Contract, Contract) ? new(this, cache) : throw new ArgumentException($"{Name}: the cache was built for another model's contract");

    /// <summary>A fresh cache of the kind this model's generators use.</summary>
    public KvCacheManager CreateCache() => Runtime.Kivi is { } kivi ? new KiviKvCache(Contract, Name, kivi)
        : Evict is { } ev ? EvictingCache(ev)
        : KvCache == KvCacheMode.Shared && Streaming is { } sp
        ? new StreamingKvCache(Contract, Name, sp, StreamingStep)
        : KvCache == KvCacheMode.Shared
        ? new SharedBufferKvCache(Contract, Name, SharedBufferLength, SharedBufferGrows, MaxContext,
            Provider == ExecutionProviderKind.Cpu ? null : new OrtAllocator(_session, KvMemory))
        : KvCacheManager.Create(Contract);

    private Eviction.EvictingKvCache EvictingCache(KvEvictPolicy ev)
    {
        if (KvCache != KvCacheMode.Shared || Provider != ExecutionProviderKind.Cpu)
            throw new RuntimeException($"{Name}: --kv-evict {ev.Method} compacts the shared KV buffer in host memory; run on CPU with --kv-cache auto or shared" + (KvCacheNote is { } why ? $" ({why})" : ""));
        return new Eviction.EvictingKvCache(new SharedBufferKvCache(Contract, Name, SharedBufferLength, SharedBufferGrows, MaxContext), ev, Name, s => _log("note: " + s));
    }

    /// <summary>
    /// Loads a bare .onnx or a compiled folder (model.onnx [+ data] + longctx.json). Registers
    /// liblongctx_ops.so when the model imports the "longctx" domain; picks the execution provider.
    /// </summary>
    public static LongCtxModel Load(string path, RuntimeOptions? options = null)
    {
        options ??= RuntimeOptions.Default;
        var log = options.Log ?? (s => Console.Error.WriteLine("lcc: " + s));
        string full = Path.GetFullPath(path);
        string modelPath, name;
        if (Directory.Exists(full))
        {
            modelPath = Path.Combine(full, LongCtxFiles.Model);
            name = Path.GetFileName(full.TrimEnd('/'));
            if (!File.Exists(modelPath)) throw new RuntimeException($"{name}: folder {full} has no {LongCtxFiles.Model}");
        }
        else if (File.Exists(full))
        {
            modelPath = full;
            name = Path.GetFileName(full) == LongCtxFiles.Model ? Path.GetFileName(Path.GetDirectoryName(full)!) + "/" + LongCtxFiles.Model : Path.GetFileName(full);
        }
        else throw new RuntimeException($"model {path} not found");
        string dir = Path.GetDirectoryName(modelPath)!;
        CheckModelFiles(name, modelPath, dir);

        // A compiled folder's longctx.json records the opsets and what the graph allows (RuntimeCapabilityAnalysis at
        // compile time); the runtime trusts it and never opens the graph itself. A bare .onnx (or a longctx.json from an
        // lcc that did not record them) is read with the compiler's reader (external data stays on disk) and probed.
        LongCtxManifest? manifest;
        try { manifest = LongCtxManifest.TryReadFolder(dir); }
        catch (ManifestException e) { throw new RuntimeException($"{name}: {e.Message}", e); }
        var recorded = manifest?.Runtime is { Capabilities: { } caps, Opsets: { } recordedOpsets } ? (caps, recordedOpsets) : default;
        LongCtx.Compiler.IR.Model? graph = null;
        IReadOnlyDictionary<string, long> opsets;
        if (recorded.caps is not null) opsets = recorded.recordedOpsets;
        else
        {
            try { graph = OnnxReader.Load(modelPath); }
            catch (ModelFormatException e) { throw new RuntimeException($"{name}: {modelPath} is not a readable ONNX model ({e.Message})", e); }
            opsets = graph.Opsets;
        }
        string? opsLib = null;
        if (opsets.ContainsKey(SessionFactory.CustomOpDomain))
        {
            opsLib = options.CustomOpsLibrary ?? DefaultCustomOpsLibrary();
            if (!File.Exists(opsLib))
                throw new RuntimeException($"{name}: the model uses custom ops (domain '{SessionFactory.CustomOpDomain}') but {SessionFactory.CustomOpLibraryName} was not found at {opsLib}; build custom-ops/ or pass its path");
        }

        var built = SessionFactory.Create(name, so => new InferenceSession(modelPath, so), options, opsLib, log);
        try
        {
            var contract = DecoderContract.Discover(name, built.Session.InputMetadata, built.Session.OutputMetadata);
            var tokenizer = Tokenizers.TryLoad(dir);
            var model = new LongCtxModel(name, modelPath, built.Session, built.Provider, contract, manifest, opsets, tokenizer, options);
            if (manifest is not null && Path.GetFileName(modelPath) == LongCtxFiles.Model && TokenFilterPolicy.From(manifest.Runtime, name) is { } tf)
                model.TokenFilter = Eviction.GemFilter.Load(dir, name, tf, options); // the filter model itself (filter.onnx) filters nothing
            if (recorded.caps is { } c)
            {
                model.UseRecordedKvCache(options, c, log);
                if (!c.ChunkedPrefill) model.NoChunking(c.ChunkedPrefillWhyNot ?? "recorded by lcc compile", log);
            }
            else
            {
                model.ChooseKvCache(options, graph!, log);
                if (options.ProbeChunkedPrefill) model.ProbeChunking(log);
            }
            return model;
        }
        catch
        {
            built.Session.Dispose();
            throw;
        }
    }

    /// <summary>ONNX Runtime opens model.onnx and its .data itself: check first (<see cref="SafeFile"/>) that both are
    /// regular files and that the data file's real path is in the model's folder (a compiled folder whose data links
    /// to a file elsewhere, or is a FIFO, is refused instead of read or waited on).</summary>
    private static void CheckModelFiles(string name, string modelPath, string dir)
    {
        try
        {
            SafeFile.Check(modelPath, what: $"{name}: {LongCtxFiles.Model}");
            string data = modelPath + ".data";
            if (File.Exists(data) || new FileInfo(data).LinkTarget is not null) SafeFile.Check(data, dir, what: $"{name}: {Path.GetFileName(data)}");
        }
        catch (UnsafeFileException e) { throw new RuntimeException(e.Message, e); }
    }

    /// <summary>
    /// Where liblongctx_ops.so is when no path is given: next to LongCtx.Runtime.dll or the app (a project reference, lcc,
    /// a self-contained publish), in the host's native search directories (an app that references the LongCtx.Runtime
    /// package: the .NET host resolves its runtimes/RID/native assets there), or under runtimes/RID/native beside them
    /// (a RID-less build of such an app). The first that exists; else the path next to the assembly (for the error).
    /// </summary>
    public static string DefaultCustomOpsLibrary()
    {
        var asmDir = Path.GetDirectoryName(typeof(LongCtxModel).Assembly.Location);
        string rid = "linux-" + System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        var roots = new[] { asmDir, AppContext.BaseDirectory }.Where(d => !string.IsNullOrEmpty(d)).Cast<string>().ToList();
        var dirs = roots
            .Concat((AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") as string ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            .Concat(roots.Select(r => Path.Combine(r, "runtimes", rid, "native")));
        var found = dirs.Select(d => Path.Combine(d, SessionFactory.CustomOpLibraryName)).FirstOrDefault(File.Exists);
        return found ?? Path.Combine(roots.FirstOrDefault() ?? ".", SessionFactory.CustomOpLibraryName);
    }

    /// <summary>
    /// Picks the KV-cache manager for a bare .onnx. Shared (explicit or auto) needs every layer's past/present to be a
    /// GroupQueryAttention's own (<see cref="RuntimeCapabilityAnalysis.WhyNotShared"/> on the graph, the check lcc
    /// compile records), then a probe: [1, 2] then [3] then [4] through a shared buffer must give the concat cache's
    /// logits. Auto falls back to concat with a note (<see cref="KvCacheNote"/>, logged when the graph has
    /// GroupQueryAttention at all); explicit shared fails clearly.
    /// </summary>
    private void ChooseKvCache(RuntimeOptions options, LongCtx.Compiler.IR.Model graph, Action<string> log)
    {
        if (!SizeSharedBuffer(options)) return;
        bool hasGqa = graph.Graph.Nodes.Any(n => n.OpType == "GroupQueryAttention");
        string? why = Contract.CacheKind != KvCacheKind.Concat ? $"the model has a {Contract.CacheKind} cache" : RuntimeCapabilityAnalysis.WhyNotShared(graph.Graph);
        if (why is null) { why = ProbeShared(); hasGqa = true; }
        SetKvCache(options, why, hasGqa, log);
    }

    /// <summary>Picks the KV-cache manager of a compiled folder from what lcc compile recorded (no graph read, no probe).</summary>
    private void UseRecordedKvCache(RuntimeOptions options, RuntimeCapabilities recorded, Action<string> log)
    {
        if (!SizeSharedBuffer(options)) return;
        string? why = recorded.SharedKvBuffer ? null : recorded.SharedKvBufferWhyNot ?? "recorded by lcc compile";
        if (why is null && Contract.CacheKind != KvCacheKind.Concat) why = $"the model has a {Contract.CacheKind} cache";
        SetKvCache(options, why, recorded.GroupQueryAttention > 0, log);
    }

    /// <summary>Sizes the shared buffers; false when the options ask for concat (nothing more to decide).</summary>
    private bool SizeSharedBuffer(RuntimeOptions options)
    {
        SharedBufferLength = options.MaxContext ?? Math.Min(DefaultSharedBufferLength, MaxContext ?? DefaultSharedBufferLength);
        SharedBufferGrows = options.MaxContext is null;
        if (options.KvCache != KvCacheMode.Concat && options.MaxContext is { } explicitLength) KvBufferBudget.Check(Name, Contract, explicitLength);
        if (options.KvCache != KvCacheMode.Concat) return true;
        KvCache = KvCacheMode.Concat;
        return false;
    }

    private void SetKvCache(RuntimeOptions options, string? why, bool hasGqa, Action<string> log)
    {
        if (why is null && Streaming is not null && Provider != ExecutionProviderKind.Cpu) why = "the streaming cache evicts in host memory (CPU only)";
        if (why is null) { KvCache = KvCacheMode.Shared; return; }
        if (Streaming is not null)
            log($"note: {Name}: streaming attention without the shared buffer: the cache is not evicted and grows with every token ({why})");
        if (options.KvCache == KvCacheMode.Shared)
            throw new RuntimeException($"{Name}: --kv-cache shared is not possible: {why}; use --kv-cache concat");
        KvCache = KvCacheMode.Concat;
        KvCacheNote = $"{Name}: KV cache is concatenated each step (no shared past/present buffer: {why})";
        if (hasGqa) log("note: " + KvCacheNote); // models without GroupQueryAttention never share: nothing to say on every load
    }

    private string? ProbeShared()
    {
        if (VocabSize < 5) return null;
        try
        {
            using var shared = new Generator(this, new SharedBufferKvCache(Contract, Name, 8));
            using var concat = new Generator(this, KvCacheManager.Create(Contract));
            int[][] steps = [[1, 2], [3], [4]];
            float tol0 = Contract.LogitsType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16 ? 2e-2f : 1e-4f;
            foreach (var ids in steps)
            {
                var a = shared.Forward(ids);
                var b = concat.Forward(ids);
                float tol = tol0 * (1 + b.Max(Math.Abs));
                float diff = a.Zip(b, (x, y) => Math.Abs(x - y)).Max();
                if (!(diff <= tol)) return $"probe logits differ from the concat cache by {diff:G3} after {shared.Length} tokens";
            }
            return null;
        }
        catch (RuntimeException e) { return SessionFactory.FirstLine(e.Message.StartsWith(Name + ": ") ? e.Message[(Name.Length + 2)..] : e.Message); }
    }

    /// <summary>
    /// Feeds [a] then [b, c] through the cache and compares the last logits with [a, b, c] in one
    /// piece. Graphs whose mask only handles "empty past" or "one token after a past" fail or
    /// disagree here; they are then prefilled in one piece (and extended token by token).
    /// </summary>
    private void ProbeChunking(Action<string> log)
    {
        if (VocabSize < 4 || (MaxContext is { } m && m < 3)) return;
        string? why = null;
        try
        {
            using var chunked = CreateGenerator();
            chunked.Forward([1]);
            var a = chunked.Forward([2, 3]);
            using var whole = CreateGenerator();
            var b = whole.Forward([1, 2, 3]);
            float scale = 1 + b.Max(Math.Abs);
            float tol = (Contract.LogitsType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16 ? 2e-2f : 1e-4f) * scale;
            float diff = a.Zip(b, (x, y) => Math.Abs(x - y)).Max();
            if (!(diff <= tol)) why = $"logits differ by {diff:G3} (tolerance {tol:G3})";
        }
        catch (RuntimeException e) { why = e.Message.StartsWith(Name + ": ") ? e.Message[(Name.Length + 2)..] : e.Message; }
        if (why is not null) NoChunking(why, log);
    }

    /// <summary>Prefill runs in one piece (and extends token by token), with a note saying why.</summary>
    private void NoChunking(string why, Action<string> log)
    {
        SupportsChunkedPrefill = false;
        var note = $"{Name}: the graph cannot take a multi-token chunk after a non-empty past ({SessionFactory.FirstLine(why)}); prefill runs in one piece";
        _notes.Add(note);
        log("note: " + note);
    }

    internal IReadOnlyList<OrtValue> Run(RunOptions ro, IReadOnlyCollection<string> names,
        IReadOnlyCollection<OrtValue> values, IReadOnlyCollection<string> outputs)
        => _session.Run(ro, names, values, outputs).ToArray(); // the caller owns (and disposes) each value

    /// <summary>
    /// Runs with an IOBinding: logits to host memory, cache outputs to <see cref="KvMemory"/>, or into
    /// <paramref name="buffers"/> when given (the shared past/present buffers). Outputs in <paramref name="outputs"/> order.
    /// </summary>
    internal IReadOnlyList<OrtValue> RunBound(RunOptions ro, IReadOnlyList<string> names,
        IReadOnlyList<OrtValue> values, IReadOnlyList<string> outputs, IReadOnlyList<OrtValue>? buffers = null)
    {
        using var binding = _session.CreateIoBinding();
        for (int i = 0; i < names.Count; i++) binding.BindInput(names[i], values[i]);
        binding.BindOutputToDevice(outputs[0], OrtMemoryInfo.DefaultInstance);
        for (int i = 1; i < outputs.Count; i++)
            if (buffers is not null && i - 1 < buffers.Count) binding.BindOutput(outputs[i], buffers[i - 1]);
            else binding.BindOutputToDevice(outputs[i], KvMemory);
        binding.SynchronizeBoundInputs();
        _session.RunWithBinding(ro, binding);
        binding.SynchronizeBoundOutputs();
        var bound = binding.GetOutputNames();
        var got = binding.GetOutputValues().ToArray();
        var byName = bound.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => got[x.i]);
        return outputs.Select(n => byName[n]).ToArray();
    }

    public void Dispose()
    {
        TokenFilter?.Dispose();
        _session.Dispose();
        if (!ReferenceEquals(KvMemory, OrtMemoryInfo.DefaultInstance)) KvMemory.Dispose();
    }
}
