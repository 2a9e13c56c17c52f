namespace LongCtx.Passes.Eviction;

/// <summary>The CLI form <c>METHOD[:k=v,...]</c> of --kv-evict and --token-filter as pass options (method + keys).</summary>
internal static class MethodSpec
{
    /// <summary>
    /// Splits <paramref name="spec"/>; <paramref name="keysOf"/> gives a method's valid keys with defaults (null: unknown
    /// method). Unknown methods and keys are one-line errors naming <paramref name="flag"/> and what is valid
    /// (<paramref name="example"/> shows one).
    /// </summary>
    public static SortedDictionary<string, string> Parse(string spec, string flag, Func<string, IReadOnlyList<(string Key, string Default, string Help)>?> keysOf,
        IEnumerable<string> methods, string example)
    {
        int colon = spec.IndexOf(':');
        string method = (colon < 0 ? spec : spec[..colon]).Trim().ToLowerInvariant();
        var keys = keysOf(method) ?? throw new ArgumentException($"{flag} {method}: unknown method; valid: {string.Join(", ", methods)} (e.g. {example})");
        var opts = new SortedDictionary<string, string>(StringComparer.Ordinal) { ["method"] = method };
        if (colon >= 0)
            foreach (var kv in spec[(colon + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                int eq = kv.IndexOf('=');
                string key = eq > 0 ? kv[..eq].Trim().ToLowerInvariant() : kv;
                if (eq <= 0 || keys.All(k => k.Key != key))
                    throw new ArgumentException($"{flag} {method}: option '{kv}' is not one of {string.Join(", ", keys.Select(k => k.Default.Length > 0 ? k.Key + "=" + k.Default : k.Key))}");
                opts[key] = kv[(eq + 1)..].Trim();
            }
        return opts;
    }
}
