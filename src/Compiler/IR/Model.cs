namespace LongCtx.Compiler.IR;

/// <summary>A whole ONNX model: metadata, opset imports and the main graph.</summary>
public sealed class Model
{
    internal Model(Graph graph) { Graph = graph; }

    public Graph Graph { get; }
    public long IrVersion { get; internal set; } = 10;
    /// <summary>Opset version per domain ("" is the default ONNX domain).</summary>
    public SortedDictionary<string, long> Opsets { get; } = new(StringComparer.Ordinal);
    public string ProducerName { get; internal set; } = "";
    public string ProducerVersion { get; internal set; } = "";
    public string Domain { get; internal set; } = "";
    public long ModelVersion { get; internal set; }
    public string DocString { get; internal set; } = "";
    public List<KeyValuePair<string, string>> MetadataProps { get; } = [];
    /// <summary>File the model was loaded from, when it was loaded from a file.</summary>
    public string? SourcePath { get; internal set; }
    /// <summary>Everything the IR does not model (functions, training info, unknown fields), kept for the writer.</summary>
    internal global::Onnx.ModelProto? Residual { get; set; }

    /// <summary>Display name for errors: the file name, or the graph name.</summary>
    public string DisplayName => SourcePath is null ? $"model '{Graph.Name}'" : Path.GetFileName(SourcePath);

    public long Opset(string domain = "") => Opsets.TryGetValue(Node.NormalizeDomain(domain), out var v) ? v : 0;

    /// <summary>Creates an empty model with a main graph, for builders.</summary>
    public static Model Create(string graphName, long defaultOpset = 21, long irVersion = 10)
    {
        var m = new Model(new Graph(graphName)) { IrVersion = irVersion, ProducerName = "longctx" };
        m.Opsets[""] = defaultOpset;
        return m;
    }
}
