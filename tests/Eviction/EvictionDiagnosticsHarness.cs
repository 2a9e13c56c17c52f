using System.Globalization;
using LongCtx.Contract;
using LongCtx.Runtime;
using LongCtx.Runtime.Eval;
using LongCtx.Runtime.Eviction;
using LongCtx.Tests.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Eviction;

/// <summary>
/// Why an eviction loses the needle (issue 12 follow-up), as a harness (not part of the suite):
/// <code>
/// LONGCTX_TESTS=all LONGCTX_EVICT_LENGTHS=1024 LONGCTX_EVICT_LIMIT=30 ./test.sh -c Release --no-build \
///   --filter "FullyQualifiedName~EvictionDiagnosticsHarness" --logger "console;verbosity=detailed"
/// </code>
/// recall-public (--rope yarn --context L), question included: the prompt but its last token is fed without
/// compressing, then per layer and KV head it prints where the window's votes rank the needle's KEY and VALUE tokens and
/// whether SnapKV at each budget keeps them, then the accuracy of variants of the window's size and pooling, each run on
/// the same prompts with the policy changed in place.
/// </summary>
[TestFixture, Explicit("harness: prints where the needle ranks under SnapKV's votes; minutes")]
public sealed class EvictionDiagnosticsHarness
{
    [Test]
    public void NeedleSurvival()
    {
        int len = int.Parse(HarnessSupport.Env("LONGCTX_EVICT_LENGTHS", "1024").Split(',')[0], CultureInfo.InvariantCulture);
        int limit = int.Parse(HarnessSupport.Env("LONGCTX_EVICT_LIMIT", "30"), CultureInfo.InvariantCulture);
        var variants = HarnessSupport.Env("LONGCTX_EVICT_VARIANTS", "32:max7,16:max7,8:max7,64:max7,32:max1").Split(',');
        var file = RuntimeFixtures.Require(Path.Combine(RuntimeFixtures.Recall, $"eval_{len}.jsonl"));
        var items = NeedleEval.Read(file, limit);
        var keyPos = ReadNeedleKeyPositions(file, limit);
        var tmp = TestSupport.TempDir("lcc-evict-diag");
        try
        {
            var dir = HarnessSupport.CompileRecall(tmp, len, "snap", "--kv-evict", HarnessSupport.Env("LONGCTX_EVICT_SPEC", "snapkv:budget=10%"));
            using var model = LongCtxModel.Load(dir, RuntimeFixtures.Cpu() with { IntraOpThreads = 0 });
            var basePolicy = model.Evict!;
            TestContext.Progress.WriteLine($"uptime: {HarnessSupport.Uptime()}; L={len}, first {limit} prompts");
            // 1. ranks of the needle's KEY (k) and VALUE (k+1) under the raw votes, per layer and KV head (window 32)
            int layers = basePolicy.Layers.Count, kvHeads = model.Contract.KvHeads;
            var rankK = new List<int>[layers, kvHeads];
            var rankV = new List<int>[layers, kvHeads];
            for (int l = 0; l < layers; l++) for (int g = 0; g < kvHeads; g++) { rankK[l, g] = []; rankV[l, g] = []; }
            for (int i = 0; i < items.Count; i++)
            {
                using var gen = model.CreateGenerator();
                var cache = (EvictingKvCache)gen.Cache;
                gen.Forward(items[i].Prompt.AsSpan(0, items[i].Prompt.Length - 1)); // no end of prompt: nothing compressed
                for (int l = 0; l < layers; l++)
                {
                    var votes = cache.KeyScores(l);
                    for (int g = 0; g < kvHeads; g++)
                    {
                        var prefix = votes[g].AsSpan(0, votes[g].Length - basePolicy.Window).ToArray();
                        rankK[l, g].Add(Rank(prefix, keyPos[i]));
                        rankV[l, g].Add(Rank(prefix, keyPos[i] + 1));
                    }
                }
            }
            TestContext.Progress.WriteLine("median rank (0 = top) of the needle's KEY / VALUE token among the prefix by the window's raw votes; share in the top 70:");
            for (int l = 0; l < layers; l++)
                for (int g = 0; g < kvHeads; g++)
                    TestContext.Progress.WriteLine($"  layer {l} kv head {g}: KEY {HarnessSupport.Median(rankK[l, g].Select(r => (double)r))} ({rankK[l, g].Count(r => r < 70)}/{items.Count}), VALUE {HarnessSupport.Median(rankV[l, g].Select(r => (double)r))} ({rankV[l, g].Count(r => r < 70)}/{items.Count})");
            // 2. accuracy of variants (window:pooling), the policy changed in place, same prompts
            foreach (var v in variants)
            {
                var parts = v.Split(':'); // window:max7 (max-pool kernel 7) | window:mass0.99 (actqkv)
                int window = int.Parse(parts[0], CultureInfo.InvariantCulture);
                var policy = parts[1].StartsWith("mass") ? basePolicy with { Window = window, Mass = double.Parse(parts[1][4..], CultureInfo.InvariantCulture) }
                    : basePolicy with { Window = window, Pool = int.Parse(parts[1][3..], CultureInfo.InvariantCulture) };
                int ok = 0;
                double kept = 0;
                foreach (var item in items)
                {
                    var cache = new EvictingKvCache(new SharedBufferKvCache(model.Contract, model.Name, model.SharedBufferLength, model.SharedBufferGrows, model.MaxContext), policy, model.Name, _ => { });
                    using var gen = model.CreateGenerator(cache);
                    var logits = EvictionSplit.Run(gen, item.Prompt, item.Prompt.Length - 1, 2048, default);
                    if (Sampler.ArgMax(logits) == item.Expected) ok++;
                    kept += cache.LayerLengths.Average() / item.Prompt.Length;
                }
                TestContext.Progress.WriteLine($"  window {window}, {parts[1]}: {ok}/{items.Count}, mean kept {kept / items.Count:P1}");
            }
            // 3. oracle: SnapKV's selection (window 32, max7) with the needle's KEY and VALUE forced into the given layers
            var compact = typeof(EvictingKvCache).GetMethod("Compact", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!;
            foreach (var forced in HarnessSupport.Env("LONGCTX_EVICT_FORCED", ";0,1,2,3").Split(';'))
            {
                var layersForced = forced.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToHashSet();
                int ok = 0;
                for (int i = 0; i < items.Count; i++)
                {
                    using var gen = model.CreateGenerator();
                    var cache = (EvictingKvCache)gen.Cache;
                    var prompt = items[i].Prompt;
                    gen.Forward(prompt.AsSpan(0, prompt.Length - 1));
                    int n = prompt.Length - 1, keep = KvEvictPolicy.Tokens(basePolicy.Budget, n), needle = keyPos[i];
                    Func<int, int[][]> select = l => cache.KeyScores(l).Select(v =>
                    {
                        var rows = EvictionSelection.SnapKv(v, n, basePolicy.Window, keep, basePolicy.Pool);
                        if (!layersForced.Contains(l)) return rows;
                        var set = rows.ToList();
                        foreach (int must in new[] { needle, needle + 1 })
                            if (!set.Contains(must)) { set.RemoveAt(set.FindLastIndex(r => r < n - basePolicy.Window && r != needle && r != needle + 1)); set.Add(must); }
                        return set.Order().ToArray();
                    }).ToArray();
                    compact.Invoke(cache, [select]);
                    var logits = gen.Forward(prompt.AsSpan(n));
                    if (Sampler.ArgMax(logits) == items[i].Expected) ok++;
                }
                TestContext.Progress.WriteLine($"  needle forced into layers [{forced}]: {ok}/{items.Count}");
            }
            // 4. oracle sets, the same rows in every layer and head: which tokens the answer needs
            foreach (var set in HarnessSupport.Env("LONGCTX_EVICT_ORACLES", "window+bos+needle,window+bos+pairs,all-but-needle,window+bos+strided,window+bos+recent").Split(','))
            {
                int ok = 0;
                for (int i = 0; i < items.Count; i++)
                {
                    using var gen = model.CreateGenerator();
                    var cache = (EvictingKvCache)gen.Cache;
                    var prompt = items[i].Prompt;
                    int n = prompt.Length - 1, needle = keyPos[i];
                    gen.Forward(prompt.AsSpan(0, n));
                    var rows = new SortedSet<int>(Enumerable.Range(n - 32, 32));
                    if (set.Contains("bos")) rows.Add(0);
                    if (set.Contains("needle")) { rows.Add(needle); rows.Add(needle + 1); }
                    if (set.Contains("pairs")) for (int j = 0; j < n; j++) if (prompt[j] is >= 8 and <= 135) rows.Add(j);
                    if (set.Contains("strided")) for (int j = 1; rows.Count < KvEvictPolicy.Tokens(basePolicy.Budget, n); j += n / Math.Max(1, KvEvictPolicy.Tokens(basePolicy.Budget, n) - 33)) rows.Add(j);
                    if (set.Contains("recent")) for (int j = n - 33; rows.Count < KvEvictPolicy.Tokens(basePolicy.Budget, n); j--) rows.Add(j);
                    if (set == "all-but-needle") { rows = new SortedSet<int>(Enumerable.Range(0, n)); rows.Remove(needle); rows.Remove(needle + 1); }
                    cache.Keep(rows.ToList());
                    if (Sampler.ArgMax(gen.Forward(prompt.AsSpan(n))) == items[i].Expected) ok++;
                }
                TestContext.Progress.WriteLine($"  oracle {set}: {ok}/{items.Count}");
            }
        }
        finally { Directory.Delete(tmp, true); }
    }

    private static int Rank(float[] scores, int at) => at >= scores.Length ? 0 : scores.Count(s => s > scores[at]); // in the window: kept

    private static int[] ReadNeedleKeyPositions(string file, int limit) =>
        File.ReadLines(file).Take(limit).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("needle_key_pos").GetInt32()).ToArray();
}
