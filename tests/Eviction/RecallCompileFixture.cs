using LongCtx.Compiler;
using LongCtx.Compiler.Passes;
using LongCtx.Passes;
using LongCtx.Passes.Eviction;
using LongCtx.Runtime;
using LongCtx.Runtime.Eval;
using LongCtx.Tests.Runtime;
using NUnit.Framework;

namespace LongCtx.Tests.Eviction;

/// <summary>What the issue-12 fixtures share: recall-public compiled once per variant into a temp folder, and its prompts.</summary>
public abstract class RecallCompileFixture
{
    protected string Tmp { get; private set; } = "";

    [OneTimeSetUp]
    public void CreateTemp() => Tmp = TestSupport.TempDir("lcc-" + GetType().Name.ToLowerInvariant());

    [OneTimeTearDown]
    public void DeleteTemp() { if (Directory.Exists(Tmp)) Directory.Delete(Tmp, true); }

    /// <summary>recall-public compiled into Tmp/<paramref name="name"/> (once): the default pipeline plus the given options, as lcc compile runs them.</summary>
    protected string Compile(string name, string? evict, string? filter = null, PipelineStep? attention = null)
    {
        var dir = Path.Combine(Tmp, name);
        if (Directory.Exists(dir)) return dir;
        var options = filter is null ? null : GemFilterSettings.FromSpec(filter);
        var steps = Pipelines.WithEviction(Pipelines.WithMethods([], attention), evict is null ? null : KvEvictSettings.Step(evict), options is null ? null : GemFilterSettings.Step(options));
        var companions = options is not null && GemFilterSettings.Parse(options).Layer is int l ? new[] { new CompanionModel(GemFilterPass.FilterFile, m => GemFilterModel.Build(m, l)) } : [];
        CompileJob.Run(RuntimeFixtures.Require(RuntimeFixtures.RecallModel), dir, Pipelines.Instantiate(steps), new CompileOptions { Companions = companions });
        return dir;
    }

    /// <summary>
    /// <paramref name="spec"/> with a budget at least the prompt evicts nothing, said once per generator: over two
    /// prompts (Reset between), the logits at the cut and 5 greedy decode steps == the compiled model without eviction.
    /// </summary>
    protected void AssertNoOpBudgetEqualsFullCache(string name, string spec)
    {
        var log = new List<string>();
        using var full = LongCtxModel.Load(Compile("full", null), RuntimeFixtures.Cpu());
        using var big = LongCtxModel.Load(Compile(name, spec), RuntimeFixtures.Cpu(log));
        using var gf = full.CreateGenerator();
        using var gb = big.CreateGenerator();
        for (int round = 0; round < 2; round++)
        {
            gf.Reset(); gb.Reset();
            var ids = Prompt(100 + round);
            var a = EvictionSplit.Run(gf, ids, 99, 32, default);
            var b = EvictionSplit.Run(gb, ids, 99, 32, default);
            Assert.That(TestSupport.MaxAbsDiff(a, b), Is.LessThan(1e-4f));
            for (int i = 0; i < 5; i++)
            {
                int t = Sampler.ArgMax(a);
                a = gf.Forward([t]); b = gb.Forward([t]);
                Assert.That(TestSupport.MaxAbsDiff(a, b), Is.LessThan(1e-4f), $"decode step {i}");
            }
        }
        Assert.That(log.Count(s => s.Contains("nothing is evicted")), Is.EqualTo(1), string.Join("\n", log));
    }

    /// <summary>The first <paramref name="n"/> tokens of recall-public's first 256-token needle prompt.</summary>
    protected static int[] Prompt(int n) =>
        NeedleEval.Read(RuntimeFixtures.Require(Path.Combine(RuntimeFixtures.Recall, "eval_256.jsonl")), 1)[0].Prompt[..n];
}
