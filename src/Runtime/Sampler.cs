namespace LongCtx.Runtime;

/// <summary>
/// Greedy / temperature / top-k / top-p sampling over one row of logits, without sorting the vocabulary.
/// <para>
/// Candidates are visited in descending logit order (ties: lower id first). Top-k keeps a k-element min-heap over one
/// pass (O(V log k)); the kept candidates (all V without top-k) go into a max-heap built in O(n) and are popped only as
/// far as top-p or the sampled mass needs, usually a handful of tokens. With p_i = exp(l_i/T - l_max/T) over the
/// candidates, top-p (nucleus, Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration") keeps the shortest
/// prefix whose mass / sum(p) reaches P; the token is the first in that order whose cumulative p exceeds
/// u * (kept mass), u = rng.NextDouble() (one draw per token). This is the full-sort algorithm visited lazily: for the
/// same seed it picks the same tokens (a test compares both on random logits); only sum(p) is accumulated in heap
/// order rather than sorted order, which can move a draw that lands within rounding of a boundary.
/// </para>
/// </summary>
public static class Sampler
{
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    public static int Sample(float[] logits, GenerationOptions o, Random rng)
    {
        if (!(o.Temperature >= GenerationChecks.MinTemperature)) return ArgMax(logits); // 0, tiny or NaN: greedy (see GenerationChecks)
        int v = logits.Length;
        int k = o.TopK > 0 ? Math.Min(o.TopK, v) : v;
        var order = new Descending(logits, k < v ? TopK(logits, k) : Enumerable.Range(0, v).ToArray());
        double t = o.Temperature, top = logits[order.Top];
        // (l - l_max) / T in double: no float overflow for a small T, and the best token always has p = 1
        double P(int id) => Math.Exp((logits[id] - top) / t);
        double sum = 0;
        foreach (int id in order.Items) sum += P(id);

        if (o.TopP < 1)
        {
            // the nucleus: pop until its normalised mass reaches P, then sample within it
            var kept = new List<(int Id, double P)>();
            double acc = 0, total = 0;
            while (order.Count > 0)
            {
                int id = order.Pop();
                double p = P(id);
                kept.Add((id, p));
                total += p;
                acc += p / sum;
                if (acc >= o.TopP) break;
            }
            double r = rng.NextDouble() * total;
            foreach (var (id, p) in kept)
            {
                r -= p;
                if (r <= 0) return id;
            }
            return kept[^1].Id;
        }
        else
        {
            double r = rng.NextDouble() * sum;
            int last = order.Top;
            while (order.Count > 0)
            {
                last = order.Pop();
                r -= P(last);
                if (r <= 0) return last;
            }
            return last;
        }
    }

    /// <summary>Whether token <paramref name="a"/> comes before <paramref name="b"/>: higher logit, then lower id.</summary>
    private static bool Before(float[] logits, int a, int b) => logits[a] > logits[b] || (logits[a] == logits[b] && a < b);

    /// <summary>The ids of the k best logits (in heap order): a min-heap of the best k seen so far, one pass.</summary>
    internal static int[] TopK(float[] logits, int k)
    {
        var heap = new int[k];
        for (int i = 0; i < k; i++) heap[i] = i;
        bool Worse(int a, int b) => Before(logits, b, a);
        for (int i = k / 2 - 1; i >= 0; i--) SiftDown(heap, k, i, Worse);
        for (int i = k; i < logits.Length; i++)
        {
            if (!Before(logits, i, heap[0])) continue;
            heap[0] = i;
            SiftDown(heap, k, 0, Worse);
        }
        return heap;
    }

    /// <summary>Restores the heap property below <paramref name="i"/>: <paramref name="above"/>(parent, child) holds.</summary>
    private static void SiftDown(int[] heap, int count, int i, Func<int, int, bool> above)
    {
        while (true)
        {
            int l = 2 * i + 1, r = l + 1, top = i;
            if (l < count && above(heap[l], heap[top])) top = l;
            if (r < count && above(heap[r], heap[top])) top = r;
            if (top == i) return;
            (heap[i], heap[top]) = (heap[top], heap[i]);
            i = top;
        }
    }

    /// <summary>Candidate ids popped best first (a binary max-heap built in O(n)).</summary>
    private sealed class Descending
    {
        private readonly int[] _heap;
        private readonly Func<int, int, bool> _above;

        public Descending(float[] logits, int[] ids)
        {
            _heap = ids;
            _above = (a, b) => Before(logits, a, b);
            Count = ids.Length;
            for (int i = Count / 2 - 1; i >= 0; i--) SiftDown(_heap, Count, i, _above);
        }

        public int Count { get; private set; }
        public int Top => _heap[0];
        /// <summary>All candidates not yet popped (any order).</summary>
        public ReadOnlySpan<int> Items => _heap.AsSpan(0, Count);

        public int Pop()
        {
            int top = _heap[0];
            _heap[0] = _heap[--Count];
            SiftDown(_heap, Count, 0, _above);
            return top;
        }
    }
}
