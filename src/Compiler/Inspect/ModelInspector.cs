using System.Text;
using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Inspect;

public sealed record IoInfo(string Name, string ElementType, IReadOnlyList<string> Shape);
public sealed record DtypeStats(string ElementType, long Parameters, long Bytes);
public sealed record ExternalFileInfo(string File, long Bytes, int Tensors);

/// <summary>What <c>lcc inspect</c> reports about any model (sections for attention and cost are added by later stages).</summary>
public sealed record InspectReport(
    string Model, long IrVersion, string Producer, IReadOnlyDictionary<string, long> Opsets,
    IReadOnlyList<IoInfo> Inputs, IReadOnlyList<IoInfo> Outputs,
    int Nodes, IReadOnlyDictionary<string, int> OpHistogram,
    long Parameters, long ParameterBytes, IReadOnlyList<DtypeStats> ByDtype,
    IReadOnlyList<ExternalFileInfo> ExternalData, int Subgraphs)
{
    public string ToText()
    {
        var sb = new StringBuilder();
        sb.Append($"model     {Model}\n");
        sb.Append($"ir        {IrVersion}    producer {(Producer.Length == 0 ? "?" : Producer)}\n");
        sb.Append("opsets    ").Append(string.Join(", ", Opsets.Select(kv => $"{(kv.Key.Length == 0 ? "ai.onnx" : kv.Key)} {kv.Value}"))).Append('\n');
        sb.Append("inputs\n");
        foreach (var i in Inputs) sb.Append($"  {i.Name,-28} {i.ElementType,-9} [{string.Join(", ", i.Shape)}]\n");
        sb.Append("outputs\n");
        foreach (var o in Outputs) sb.Append($"  {o.Name,-28} {o.ElementType,-9} [{string.Join(", ", o.Shape)}]\n");
        sb.Append($"nodes     {Nodes}" + (Subgraphs > 0 ? $" (+ {Subgraphs} subgraphs)" : "") + "\n");
        foreach (var (op, n) in OpHistogram.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal))
            sb.Append($"  {op,-48} {n,6}\n");
        sb.Append($"parameters {Parameters:N0} ({FormatBytes(ParameterBytes)})\n");
        foreach (var d in ByDtype) sb.Append($"  {d.ElementType,-10} {d.Parameters,14:N0} params {FormatBytes(d.Bytes),12}\n");
        if (ExternalData.Count > 0)
        {
            sb.Append("external data\n");
            foreach (var f in ExternalData) sb.Append($"  {f.File,-30} {FormatBytes(f.Bytes),12}  {f.Tensors} tensors\n");
        }
        return sb.ToString();
    }

    public static string FormatBytes(long b) =>
        b >= 1L << 30 ? $"{b / (double)(1L << 30):0.##} GiB" : b >= 1L << 20 ? $"{b / (double)(1L << 20):0.##} MiB" : b >= 1L << 10 ? $"{b / 1024.0:0.##} KiB" : $"{b} B";
}

public static class ModelInspector
{
    public static InspectReport Inspect(Model m)
    {
        var hist = new SortedDictionary<string, int>(StringComparer.Ordinal);
        int subgraphs = 0;
        foreach (var n in m.Graph.AllNodes())
        {
            hist[n.QualifiedOp] = hist.GetValueOrDefault(n.QualifiedOp) + 1;
            subgraphs += n.Subgraphs.Count();
        }
        var inits = AllInitializers(m.Graph).ToList();
        var byType = inits.GroupBy(v => v.Const!.Element).OrderBy(g => g.Key)
            .Select(g => new DtypeStats(g.Key.ShortName(), g.Sum(v => v.Const!.ElementCount), g.Sum(v => v.Const!.ByteLength))).ToList();
        var ext = inits.Where(v => v.Const!.Source is ExternalSource).GroupBy(v => ((ExternalSource)v.Const!.Source).Path)
            .Select(g => new ExternalFileInfo(Path.GetFileName(g.Key), new FileInfo(g.Key).Length, g.Count())).ToList();
        return new InspectReport(
            m.SourcePath ?? m.DisplayName, m.IrVersion, (m.ProducerName + " " + m.ProducerVersion).Trim(), new SortedDictionary<string, long>(m.Opsets, StringComparer.Ordinal),
            m.Graph.Inputs.Where(v => !v.IsInitializer).Select(Io).ToList(), m.Graph.Outputs.Select(Io).ToList(),
            m.Graph.AllNodes().Count(), hist,
            inits.Sum(v => v.Const!.ElementCount), inits.Sum(v => v.Const!.ByteLength), byType, ext, subgraphs);
    }

    private static IoInfo Io(Value v) => new(v.Name, v.Type?.Element.ShortName() ?? "?", v.Type?.Shape?.Dims.Select(d => d.ToString()).ToList() ?? ["*"]);

    private static IEnumerable<Value> AllInitializers(Graph g)
    {
        foreach (var v in g.Initializers) yield return v;
        foreach (var n in g.Nodes) foreach (var sg in n.Subgraphs) foreach (var v in AllInitializers(sg)) yield return v;
    }
}
