using System.Globalization;
using LongCtx.Cli;
using LongCtx.Cli.Commands;
using LongCtx.Compiler.Passes;
using LongCtx.Passes;
using LongCtx.Passes.Rope;
using NUnit.Framework;

namespace LongCtx.Tests.Rope;

/// <summary>
/// The RoPE methods are one table (<see cref="RopeMethods"/>): it drives the pass registry, <c>--rope</c> parsing,
/// validation and help, <c>--list-passes</c>, and each pass's defaults.
/// </summary>
[TestFixture]
public sealed class RopeMethodTableTests
{
    public static IEnumerable<string> Methods => RopeMethods.Names;

    private static string FactorFile()
    {
        var f = Path.Combine(Directory.CreateTempSubdirectory("rope-table").FullName, "factors.json");
        File.WriteAllText(f, "{\"short_factor\": [1,1,1,1.1,1.2,1.3,1.4,1.5], \"long_factor\": [1,1.5,2,3,4,5,6,8]}");
        return f;
    }

    /// <summary>Every option of every method, given on the command line, arrives unchanged in the pass's step; the registry makes that pass.</summary>
    [TestCaseSource(nameof(Methods))]
    public void EveryMethodRoundTripsCliParsing(string method)
    {
        var row = RopeMethods.Get(method);
        var given = row.Parameters.ToDictionary(p => p.Name, p => p.IsNumber ? (1.5 + p.Name.Length).ToString(CultureInfo.InvariantCulture) : FactorFile());
        string text = given.Count == 0 ? method : method + ":" + string.Join(",", given.Select(kv => $"{kv.Key}={kv.Value}"));
        var step = RopeOptions.Parse(text, 4096, 256, false).Single();
        Assert.That(step.Pass, Is.EqualTo(row.PassName));
        var want = new Dictionary<string, string>(given) { ["context"] = "4096", ["trained-context"] = "256" };
        Assert.That(step.Options, Is.EquivalentTo(want));
        var pass = Pipelines.Create(step.Pass);
        Assert.That((pass.Name, pass.Description, pass.IsExact), Is.EqualTo((row.PassName, row.Description, false)));
        Assert.That(RopeOptions.Methods, Does.Contain(method));
    }

    /// <summary>The numeric defaults in the table are what the passes use: the tables with and without the options spelled out agree.</summary>
    [TestCaseSource(nameof(Methods))]
    public void TableDefaultsAreThePassDefaults(string method)
    {
        var row = RopeMethods.Get(method);
        var bare = RopeFixture.Opts(("context", "128"), ("trained-context", TinyRope.Trained.ToString()));
        if (method == "longrope") bare["factors"] = FactorFile();
        var spelled = new Dictionary<string, string>(bare);
        foreach (var p in row.Parameters.Where(p => p.Default is not null))
            spelled[p.Name] = p.Default!.Value.ToString("R", CultureInfo.InvariantCulture);
        var a = TinyRope.TorchForm();
        var b = TinyRope.TorchForm();
        RopeFixture.Apply(a, method, bare);
        RopeFixture.Apply(b, method, spelled);
        Assert.That(LongCtx.Compiler.Diff.ModelDiff.Compare(a, b).ToText(), Is.EqualTo(LongCtx.Compiler.Diff.ModelDiff.Compare(a, a).ToText()));
    }

    [Test]
    public void UnknownMethodListsTheMethods()
    {
        var ex = Assert.Throws<ArgumentException>(() => RopeOptions.Parse("yarm", 4096, null, false));
        Assert.That(ex!.Message, Does.Contain("unknown method"));
        foreach (var m in RopeMethods.Names) Assert.That(ex.Message, Does.Contain(m));
    }

    [TestCaseSource(nameof(Methods))]
    public void UnknownParameterListsTheValidOnes(string method)
    {
        var row = RopeMethods.Get(method);
        var ex = Assert.Throws<ArgumentException>(() => RopeOptions.Parse(method + ":bogus=1", 4096, null, false));
        Assert.That(ex!.Message, Does.Contain("unknown option 'bogus'"));
        foreach (var p in row.AllParameters) Assert.That(ex.Message, Does.Contain(p.Name));
        // the pass checks its options too (pipelines built in code)
        var ex2 = Assert.Throws<ArgumentException>(() => RopeFixture.Apply(TinyRope.TorchForm(), method, RopeFixture.Opts(("context", "128"), ("bogus", "1"))));
        Assert.That(ex2!.Message, Does.Contain("unknown option 'bogus'"));
    }

    [Test]
    public void RequiredParameterIsNamed()
    {
        var ex = Assert.Throws<ArgumentException>(() => RopeOptions.Parse("longrope", 4096, null, false));
        Assert.That(ex!.Message, Does.Contain("factors="));
    }

    [Test]
    public void RegistryHelpAndListPassesComeFromTheTable()
    {
        var ropePasses = Pipelines.Names.Where(n => n.StartsWith(RopeMethods.PassPrefix, StringComparison.Ordinal));
        Assert.That(ropePasses, Is.EquivalentTo(RopeMethods.All.Select(m => m.PassName)));
        foreach (var m in RopeMethods.All) Assert.That(RopeOptions.Rope.Description, Does.Contain(m.Name));

        var (o, e) = (Console.Out, Console.Error);
        var outW = new StringWriter();
        Console.SetOut(outW); Console.SetError(new StringWriter());
        int rc;
        try { rc = Program.BuildRoot().Parse(["compile", "--list-passes"]).Invoke(); }
        finally { Console.SetOut(o); Console.SetError(e); }
        Assert.That(rc, Is.EqualTo(0));
        var text = outW.ToString();
        foreach (var m in RopeMethods.All)
        {
            Assert.That(text, Does.Contain(m.Formula), m.Name);
            Assert.That(text, Does.Contain(m.Source), m.Name);
            foreach (var p in m.Parameters) Assert.That(text, Does.Contain(p.ToString()), $"{m.Name} {p.Name}");
        }
    }

    [Test]
    public void ReadmeNamesEveryMethod()
    {
        var readme = File.ReadAllText(Path.Combine(TestSupport.RepoRoot, "README.md"));
        foreach (var m in RopeMethods.Names) Assert.That(readme, Does.Contain($"`{m}`"), m);
    }

    [Test]
    public void TargetContextOptionAndStepOptionMustAgree()
    {
        var m = TinyRope.TorchForm();
        var ex = Assert.Throws<ArgumentException>(() => PassManager.Run(m, [(Pipelines.Create("rope-linear"), RopeFixture.Opts(("context", "128"), ("trained-context", "32")))],
            new PassManagerOptions { TargetContext = 256 }));
        Assert.That(ex!.Message, Does.Contain("context=128").And.Contain("256"));
        var r = PassManager.Run(TinyRope.TorchForm(), [(Pipelines.Create("rope-linear"), RopeFixture.Opts(("trained-context", "32")))], new PassManagerOptions { TargetContext = 128 });
        Assert.That(r.RuntimeConfig["rope"], Is.Not.Null);
        Assert.That(((Dictionary<string, object?>)r.RuntimeConfig["rope"]!)["context"], Is.EqualTo(128L));
    }

    /// <summary>The target context is a pipeline option, not a RoPE one: canonicalize-attention covers it without any rope pass.</summary>
    [Test]
    public void TargetContextAloneSizesTheCanonicalCaches()
    {
        var m = LongCtx.Compiler.OnnxIO.OnnxReader.Load(TestSupport.Fixture("recall-public/model.onnx"));
        var r = PassManager.Run(m, Pipelines.Instantiate(Pipelines.Default), new PassManagerOptions { TargetContext = 40000 });
        var rows = m.Graph.Nodes.Where(n => n.OpType == "GroupQueryAttention").Select(n => n.Input(7)!.Const!.Dims[0]).Distinct();
        Assert.That(rows, Is.EqualTo(new[] { 40000L }));
        Assert.That(r.RuntimeConfig["max_context"], Is.EqualTo(40000L));
        Assert.That(m.MetadataProps.Select(kv => kv.Key), Has.None.EqualTo("longctx.context"), "no metadata side channel");
    }
}
