"""Variable-size GPU groups on the nodes of a budget (for adaptive allocation policies).

A static split places fixed slots up front (:mod:`.cluster`). An adaptive policy gives a
trial's segments different GPU counts, so its driver takes and frees groups as it goes:

* ``g <= gpus_per_node``: ``g`` GPUs on one node, best fit (the node with the fewest free GPUs
  that still holds ``g``, ties to the lower node), its lowest-numbered free GPUs;
* ``g > gpus_per_node``: ``g / gpus_per_node`` whole free full-size nodes, the lowest first.

Requests are served first come, first served, strictly in order (no overtaking): a request
that does not fit waits, and so does every request behind it, until enough is freed. That is
nasalloc's model of a trial whose larger allocation is not free (Ray Tune keeps it PENDING; its
resource manager also serves requests in order). GPUs no group holds are idle (``free``).
"""

from __future__ import annotations

from nasalloc.errors import UserError


class GpuPool:
    def __init__(self, budget: int, gpus_per_node: int):
        self.budget, self.gpus_per_node = int(budget), int(gpus_per_node)
        full, remainder = divmod(self.budget, self.gpus_per_node)
        sizes = [self.gpus_per_node] * full + ([remainder] if remainder else [])
        self.capacity = sizes
        self.free_on = [list(range(size)) for size in sizes]  # free local indices per node, sorted
        self.free = self.budget

    def fits_ever(self, g: int) -> bool:
        """Whether an empty pool could place a group of ``g``."""
        if g <= self.gpus_per_node:
            return any(c >= g for c in self.capacity)
        return g % self.gpus_per_node == 0 and g // self.gpus_per_node <= self.capacity.count(self.gpus_per_node)

    def take(self, g: int):
        """The global GPU indices of a new group of ``g``, or None when it does not fit now."""
        g = int(g)
        if g < 1 or not self.fits_ever(g):
            raise UserError(f"a group of {g} GPU(s) cannot be placed on {self.budget} GPUs in nodes of "
                            f"{self.gpus_per_node}")
        if g > self.free:
            return None
        n = self.gpus_per_node
        if g <= n:
            best = None
            for node, free in enumerate(self.free_on):
                if len(free) >= g and (best is None or len(free) < len(self.free_on[best])):
                    best = node
            if best is None:
                return None
            taken, self.free_on[best] = self.free_on[best][:g], self.free_on[best][g:]
            self.free -= g
            return tuple(best * n + i for i in taken)
        need = g // n
        nodes = [k for k, free in enumerate(self.free_on) if self.capacity[k] == n and len(free) == n][:need]
        if len(nodes) < need:
            return None
        for k in nodes:
            self.free_on[k] = []
        self.free -= g
        return tuple(k * n + i for k in nodes for i in range(n))

    def give(self, gpus) -> None:
        """Free a group taken before."""
        n = self.gpus_per_node
        for gpu in gpus:
            node, local = divmod(int(gpu), n)
            free = self.free_on[node]
            if local in free or local >= self.capacity[node]:
                raise RuntimeError(f"GPU {gpu} freed twice or never taken")
            free.append(local)
            free.sort()
        self.free += len(gpus)
