"""The offline side of Foresight: data, network, training, evaluation, export and registry."""
