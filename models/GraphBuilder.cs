using LongCtx.Compiler.IR;

namespace LongCtx.Models;

/// <summary>
/// Deterministic weights: SplitMix64 (Steele, Lea, Flood 2014) turned into uniform floats with integer arithmetic only,
/// so the same seed gives the same bits on every platform.
/// </summary>
public sealed class SeededWeights(int seed)
{
    private ulong _state = 0x9E3779B97F4A7C15UL * (ulong)(uint)seed + 0xD1B54A32D192ED03UL;

    public ulong NextUInt64()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [-1, 1).</summary>
    public float NextSigned() => (NextUInt64() >> 40) * (2.0f / (1 << 24)) - 1.0f;

    /// <summary>Uniform values with standard deviation <paramref name="std"/> (a = std * sqrt 3).</summary>
    public float[] Uniform(int count, float std)
    {
        float a = std * MathF.Sqrt(3f);
        var r = new float[count];
        for (int i = 0; i < count; i++) r[i] = a * NextSigned();
        return r;
    }

    /// <summary>Values near <paramref name="center"/> (norm weights): center + uniform(spread).</summary>
    public float[] Around(int count, float center, float spread)
    {
        var r = new float[count];
        for (int i = 0; i < count; i++) r[i] = center + spread * NextSigned();
        return r;
    }
}

/// <summary>Thin helper over <see cref="Rewriter"/> for the builders: constants, typed initializers, torch-style node naming.</summary>
internal sealed class GraphBuilder
{
    private readonly Dictionary<string, int> _names = new(StringComparer.Ordinal);
    private int _onnxCounter = 1000;

    public GraphBuilder(string name, long opset, ModelDtype dtype)
    {
        Model = Model.Create(name, opset);
        Rw = new Rewriter(Model);
        Dtype = dtype;
    }

    public Model Model { get; }
    public Rewriter Rw { get; }
    public Graph G => Model.Graph;
    public ModelDtype Dtype { get; }
    public ElementType Elem => Dtype == ModelDtype.Float16 ? ElementType.Float16 : ElementType.Float;
    public long ElemCode => (long)Elem;

    /// <summary>A tensor of the model dtype.</summary>
    public Tensor Data(float[] v, params long[] dims) =>
        Dtype == ModelDtype.Float16 ? Tensor.FromHalves(v.Select(x => (Half)x).ToArray(), dims) : Tensor.FromFloats(v, dims);

    public Value Init(string name, float[] v, params long[] dims) => Rw.AddInitializer(G, name, Data(v, dims));
    public Value InitF32(string name, float[] v, params long[] dims) => Rw.AddInitializer(G, name, Tensor.FromFloats(v, dims));
    public Value InitI64(string name, long[] v, params long[] dims) => Rw.AddInitializer(G, name, Tensor.FromInt64s(v, dims));

    /// <summary>A projection weight [in, out], named like torch's transposed weights ("onnx::MatMul_N").</summary>
    public Value Weight(float[] data, int rows, int cols, string? name = null) =>
        Init(name ?? $"onnx::MatMul_{_onnxCounter++}", data, rows, cols);

    /// <summary>Torch-style unique node name "/scope/Op", "/scope/Op_1", ...</summary>
    public string NodeName(string scope, string op)
    {
        string hint = scope.Length == 0 ? $"/{op}" : $"/{scope}/{op}";
        int k = _names.GetValueOrDefault(hint);
        _names[hint] = k + 1;
        return k == 0 ? hint : $"{hint}_{k}";
    }

    /// <summary>Adds a node named torch-style; its single output is "NAME_output_0" (or <paramref name="output"/>).</summary>
    public Value T(string scope, string op, IEnumerable<Value?> inputs, IEnumerable<Attr>? attrs = null, string domain = "", string? output = null)
    {
        var name = NodeName(scope, op);
        return Rw.AddNode(G, op, inputs, [output ?? name + "_output_0"], attrs, domain, name).Output();
    }

    /// <summary>Multi-output node.</summary>
    public IReadOnlyList<Value?> TN(string scope, string op, IEnumerable<Value?> inputs, IEnumerable<string> outputs, IEnumerable<Attr>? attrs = null, string domain = "")
    {
        var name = NodeName(scope, op);
        return Rw.AddNode(G, op, inputs, outputs, attrs, domain, name).Outputs;
    }

    /// <summary>A Constant node (torch exports constants this way).</summary>
    public Value C(string scope, Tensor t) => T(scope, "Constant", [], [Attr.TensorValue("value", t)]);
    public Value CI(string scope, params long[] v) => C(scope, Tensor.FromInt64s(v, v.Length));
    public Value CScalarI(string scope, long v) => C(scope, Tensor.FromInt64s([v]));
    public Value CScalarF(string scope, float v) => C(scope, Data([v]));
    public Value CScalarF32(string scope, float v) => C(scope, Tensor.FromFloats([v]));

    public static Attr Ints(string n, params long[] v) => Attr.Ints(n, v);
    public static Attr Int(string n, long v) => Attr.Int(n, v);
    public static Attr Float(string n, float v) => Attr.Float(n, v);

    public Value Input(string name, ElementType t, params Dim[] dims) => Rw.AddInput(G, name, new TensorType(t, new Shape(dims)));

    public void Output(Value v, ElementType t, params Dim[] dims)
    {
        Rw.SetType(v, new TensorType(t, new Shape(dims)));
        Rw.AddOutput(G, v);
    }
}
