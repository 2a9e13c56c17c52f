using CsCheck;
using LongCtx.Compiler.Diff;
using LongCtx.Compiler.IR;
using LongCtx.Compiler.OnnxIO;
using LongCtx.Compiler.Passes;
using LongCtx.Models;
using LongCtx.Passes;
using NUnit.Framework;

namespace LongCtx.Tests.Properties;

/// <summary>
/// Property tests (CsCheck: random generation with shrinking to a minimal failing case, printed with its seed) for the
/// IR: random valid graphs survive save/load unchanged, and every pass of the default pipeline keeps the Verifier green
/// on them and on random tiny decoders of every builder form. Iteration counts keep the fixture at a few seconds; a
/// failure prints a CsCheck seed that replays it (Sample(..., seed: "...")).
/// </summary>
[TestFixture]
public sealed class IrPropertyTests
{
    /// <summary>Random graphs per property (each is tens of nodes; the whole fixture runs in a few seconds).</summary>
    public const int Iterations = 300;

    private static readonly string[] Unary = ["Relu", "Tanh", "Sigmoid", "Identity", "Neg", "Abs", "Exp", "Softmax", "Cast"];
    private static readonly string[] Binary = ["Add", "Mul", "Sub", "Max", "Min"];

    /// <summary>One step of a random program: an op kind and two operand picks (taken modulo the values defined so far).</summary>
    public sealed record Step(int Kind, int A, int B, bool Named);

    /// <summary>A random program: inputs, width of every tensor, the steps, how many outputs, and whether weights repeat.</summary>
    public sealed record Recipe(long Opset, int Inputs, int Width, IReadOnlyList<Step> Steps, int Outputs, bool RepeatWeights)
    {
        public override string ToString() => $"opset {Opset}, {Inputs} inputs, width {Width}, {Steps.Count} steps, {Outputs} outputs{(RepeatWeights ? ", repeated weights" : "")}";
    }

    public static readonly Gen<Recipe> Recipes =
        Gen.Select(Gen.Int[13, 21], Gen.Int[1, 3], Gen.Int[1, 6],
            Gen.Select(Gen.Int[0, Unary.Length + Binary.Length + 2], Gen.Int[0, 1000], Gen.Int[0, 1000], Gen.Bool, (k, a, b, n) => new Step(k, a, b, n)).List[1, 30],
            Gen.Int[1, 3], Gen.Bool,
            (opset, inputs, width, steps, outputs, repeat) => new Recipe(opset, inputs, width, steps, outputs, repeat));

    /// <summary>Builds a valid float32 graph from <paramref name="r"/>: [batch, width] values through unary, binary, MatMul-with-weight and bias-Add steps; some values stay unused (dead code).</summary>
    public static Model Build(Recipe r)
    {
        var m = Model.Create("random", r.Opset);
        var rw = new Rewriter(m);
        var g = m.Graph;
        var type = new TensorType(ElementType.Float, new Shape("batch", r.Width));
        var values = new List<Value>();
        for (int i = 0; i < r.Inputs; i++) values.Add(rw.AddInput(g, $"x{i}", type));
        int w = 0;
        Tensor Weight(int seed, params long[] dims)
        {
            var data = new float[dims.Aggregate(1L, (a, d) => a * d)];
            for (int i = 0; i < data.Length; i++) data[i] = ((seed * 31 + i * 7) % 13 - 6) / 8f;
            return Tensor.FromFloats(data, dims);
        }
        foreach (var s in r.Steps)
        {
            Value a = values[s.A % values.Count], b = values[s.B % values.Count];
            string? name = s.Named ? $"v{values.Count}" : null;
            Value y;
            if (s.Kind < Unary.Length)
            {
                var op = Unary[s.Kind];
                IEnumerable<Attr> attrs = op switch { "Cast" => [Attr.Int("to", (long)ElementType.Float)], "Softmax" => [Attr.Int("axis", -1)], _ => [] };
                y = rw.Op(g, op, [a], attrs, outputName: name);
            }
            else if (s.Kind < Unary.Length + Binary.Length) y = rw.Op(g, Binary[s.Kind - Unary.Length], [a, b], outputName: name);
            else if (s.Kind == Unary.Length + Binary.Length)
                y = rw.Op(g, "MatMul", [a, rw.AddInitializer(g, "w", Weight(r.RepeatWeights ? 1 : w++, r.Width, r.Width))], outputName: name);
            else y = rw.Op(g, "Add", [a, rw.AddInitializer(g, "bias", Weight(r.RepeatWeights ? 2 : w++, r.Width))], outputName: name);
            rw.SetType(y, type);
            values.Add(y);
        }
        var produced = values.Skip(r.Inputs).ToList();
        foreach (var v in Enumerable.Range(0, r.Outputs).Select(i => produced[^(1 + i * 3 % produced.Count)]).Distinct()) rw.AddOutput(g, v);
        return m;
    }

    [Test]
    public void RandomGraphs_AreValid_AndRoundTripThroughSaveAndLoadUnchanged()
    {
        int cases = 0;
        Recipes.Sample(r =>
        {
            var m = Build(r);
            Verifier.Verify(m);
            var bytes = OnnxWriter.ToBytes(m);
            var back = OnnxReader.FromBytes(bytes);
            Verifier.Verify(back);
            var diff = ModelDiff.Compare(m, back);
            if (!diff.IsEmpty) throw new AssertionException($"{r}: save/load changed the model:\n{diff.ToText()}");
            if (!OnnxWriter.ToBytes(back).AsSpan().SequenceEqual(bytes)) throw new AssertionException($"{r}: saving the loaded model gives other bytes");
            Interlocked.Increment(ref cases);
        }, iter: Iterations, threads: 1);
        Assert.That(cases, Is.EqualTo(Iterations));
        TestContext.Out.WriteLine($"{cases} random graphs round-tripped");
    }

    [Test]
    public void EveryDefaultPass_KeepsTheVerifierGreen_OnRandomGraphs()
    {
        int cases = 0;
        Recipes.Sample(r =>
        {
            // each pass alone, then the whole pipeline (which verifies after every pass as well)
            foreach (var step in Pipelines.Default)
            {
                var m = Build(r);
                PassManager.Run(m, Pipelines.Instantiate([step]));
                if (Verifier.Check(m) is { Count: > 0 } errors) throw new AssertionException($"{r}: after {step.Pass}: {string.Join("; ", errors)}");
                if (m.Graph.Outputs.Count == 0) throw new AssertionException($"{r}: {step.Pass} removed the outputs");
            }
            var all = Build(r);
            PassManager.Run(all, Pipelines.Instantiate(Pipelines.Default));
            Verifier.Verify(all);
            Interlocked.Increment(ref cases);
        }, iter: Iterations / 3, threads: 1);
        Assert.That(cases, Is.EqualTo(Iterations / 3));
        TestContext.Out.WriteLine($"{cases} random graphs through {Pipelines.Default.Count} passes");
    }

    /// <summary>Random tiny decoders of every builder form through the default pipeline: the Verifier stays green.</summary>
    [Test]
    public void DefaultPipeline_KeepsTheVerifierGreen_OnRandomDecoders()
    {
        var decoders = Gen.Select(Gen.Int[0, Builders.Forms.Count - 1].Select(i => Builders.Forms[i]), Gen.Int[1, 2], Gen.Int[1, 2].Select(i => 16 * i), Gen.Int[0, 1000], Gen.Bool,
            (form, layers, headDim, seed, fp16) => (form, layers, headDim, seed, fp16: fp16 && form != "bert")); // the encoder builder is float32 only
        int cases = 0;
        decoders.Sample(d =>
        {
            var c = new DecoderConfig(Layers: d.layers, Hidden: 2 * d.headDim, Heads: 2, KvHeads: d.form is "mha" or "ort-gpt2" ? 2 : 1, HeadDim: d.headDim,
                Vocab: 16, MaxPositions: 16, Seed: d.seed, Dtype: d.fp16 ? ModelDtype.Float16 : ModelDtype.Float32, Intermediate: 16);
            var m = OnnxReader.FromBytes(OnnxWriter.ToBytes(Builders.Build(d.form, c)));
            PassManager.Run(m, Pipelines.Instantiate(Pipelines.Default));
            if (Verifier.Check(m) is { Count: > 0 } errors) throw new AssertionException($"{d}: {string.Join("; ", errors)}");
            Interlocked.Increment(ref cases);
        }, iter: 24, threads: 1);
        Assert.That(cases, Is.EqualTo(24));
    }
}
