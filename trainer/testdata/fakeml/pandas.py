class DataFrame:
    def __init__(self, data, columns):
        self.cols = {c: [row[i] for row in data] for i, c in enumerate(columns)}

    def __setitem__(self, name, values):
        self.cols[name] = list(values)

    def __getitem__(self, name):
        return self.cols[name]

    def __len__(self):
        return len(next(iter(self.cols.values())))

    @property
    def shape(self):
        return (len(self), len(self.cols))

    def drop(self, columns):
        df = DataFrame([], [])
        df.cols = {c: v for c, v in self.cols.items() if c != columns}
        return df

    def rows(self):
        return [tuple(r) for r in zip(*self.cols.values())]
