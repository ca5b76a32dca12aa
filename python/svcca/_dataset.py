"""Writing activations into an svcca dataset."""


class Dataset:
    def __init__(self, url):
        self.url = str(url)
