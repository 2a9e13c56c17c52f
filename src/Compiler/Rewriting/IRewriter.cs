using LongCtx.Compiler.IR;

namespace LongCtx.Compiler.Rewriting;

/// <summary>
/// What a rewrite rule may do to the model (MLIR's PatternRewriter, STYLE principle 2): every mutation goes through
/// here, so the driver sees which nodes were added or touched (they go back on its worklist) and which became dead
/// (it erases them). Implemented over <see cref="Rewriter"/> by <see cref="GreedyDriver"/>; rules get nothing else.
/// </summary>
public interface IRewriter
{
    /// <summary>The model being rewritten (read it freely; change it only through this interface).</summary>
    Model Model { get; }

    Node AddNode(Graph graph, string opType, IEnumerable<Value?> inputs, IEnumerable<string> outputNames,
        IEnumerable<Attr>? attrs = null, string domain = "", string? name = null);

    /// <summary>Adds a single-output node and returns its output.</summary>
    Value Op(Graph graph, string opType, IEnumerable<Value?> inputs, IEnumerable<Attr>? attrs = null, string domain = "", string? outputName = null);

    Value AddInitializer(Graph graph, string nameHint, Tensor data);
    void SetInput(Node n, int index, Value? v);
    void SetAttribute(Node n, Attr a);
    void SetType(Value v, TensorType? t);
    /// <summary>Points every use of <paramref name="old"/> at <paramref name="replacement"/> (graph outputs keep their names).</summary>
    void ReplaceAllUsesWith(Value old, Value replacement);
    /// <summary>Removes a node whose outputs are unused.</summary>
    void Erase(Node n);
    void SetMetadata(string key, string value);

    /// <summary>Adds a graph input (for rules that change the I/O contract, e.g. unpacking a packed KV cache).</summary>
    Value AddInput(Graph graph, string name, TensorType type);
    /// <summary>Removes a graph input nothing uses any more.</summary>
    void RemoveInput(Graph graph, Value v);
    /// <summary>Makes <paramref name="v"/> a graph output at <paramref name="position"/> (-1: last).</summary>
    void AddOutput(Graph graph, Value v, int position = -1);
    /// <summary>Stops <paramref name="v"/> being a graph output (its producer dies when nothing else reads it).</summary>
    void RemoveOutput(Graph graph, Value v);
    /// <summary>Renames a value (made unique if taken).</summary>
    void RenameValue(Value v, string name);
    void EnsureOpset(string domain, long version);

    /// <summary>
    /// A value several applications of a driver run share (one seqlens_k for all layers, one cos cache per
    /// frequency set): made by <paramref name="create"/> the first time <paramref name="key"/> is asked for, then reused.
    /// Lives for one driver run; rules stay stateless.
    /// </summary>
    T Shared<T>(string key, Func<T> create) where T : class;
}
