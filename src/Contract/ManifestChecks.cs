namespace LongCtx.Contract;

/// <summary>
/// Ranges of the longctx.json fields the runtime sizes things by (issue 14, "longctx.json fields of the wrong type or
/// range"): a wrong type is caught by the JSON reader (<see cref="LongCtxManifest.Parse"/> names the field); a number
/// out of range is a one-line <see cref="ManifestException"/> naming the file, the field and the valid range.
/// </summary>
public static class ManifestChecks
{
    public static LongCtxManifest Checked(LongCtxManifest m, string where)
    {
        void Range(long? v, string field, long min, long max)
        {
            if (v is { } x && (x < min || x > max))
                throw new ManifestException($"{where}: field {field} is {x}; valid: {min}..{max}; fix it or recompile with lcc compile");
        }
        var rt = m.Runtime ?? throw new ManifestException($"{where}: field runtime is null; fix it or recompile with lcc compile");
        Range(rt.MaxContext, "runtime.max_context", 1, int.MaxValue);
        Range(rt.MaxPositionEmbeddings, "runtime.max_position_embeddings", 1, int.MaxValue);
        if (rt.Kv is { } kv)
        {
            Range(kv.Sink, "runtime.kv.sink", 0, int.MaxValue);
            Range(kv.Window, "runtime.kv.window", 0, int.MaxValue);
            Range(kv.MaxPositions, "runtime.kv.max_positions", 1, int.MaxValue);
        }
        if (rt.Capabilities is { } c) Range(c.GroupQueryAttention, "runtime.capabilities.group_query_attention", 0, int.MaxValue);
        if (rt.Opsets is { } ops)
            foreach (var (domain, version) in ops) Range(version, $"runtime.opsets.{(domain.Length == 0 ? "\"\"" : domain)}", 1, 1000);
        if (m.Pipeline is null) throw new ManifestException($"{where}: field pipeline is null; fix it or recompile with lcc compile");
        return m;
    }
}
