"""The paper's networks, its Figure 2 table, as lists of named layers.

Each builder returns [(name, layer), ...] in order, which ``nets.Network`` holds;
``nets.build(name)`` is the way to get a network. Initialisation, the flat buffers of
θ, dθ and m, and pruning are the Network's business, not these lists'.

Lenet (LeCun et al. 1998, the paper's "Lenet-300-100"): 784-300-100-10, ReLU.
Conv-2/4/6: 3x3 convolutions with ReLU and 2x2 max-pools, then fc 256, 256, 10.
VGG-19 and Resnet-18 (the paper's Section 5): their CIFAR forms, with batch norm.
"""
import numpy as np

from .layers import Dense, Dropout, Flatten, ReLU

MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)


def lenet(input_shape=MNIST_SHAPE, dropout=0.0, dtype=np.float32):
    """Lenet-300-100: fully connected 300, 100, 10 with ReLU (the paper's Figure 2)."""
    sizes = [int(np.prod(input_shape)), 300, 100, 10]
    layers = [("flatten", Flatten())]
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        layers.append((f"fc{index}", Dense(fan_in, fan_out, dtype)))
        if index < len(sizes) - 1:
            layers.append((f"relu{index}", ReLU()))
            if dropout:
                layers.append((f"dropout{index}", Dropout(dropout)))
    return layers


def _conv_stack(plan, input_shape, batch_norm, dtype):
    """3x3 "same" convs with ReLU (or batch norm and ReLU, one layer: conv.BatchNorm2d) and 2x2
    max-pools; returns (layers, output shape)."""
    from .conv import BatchNorm2d, Conv2d, MaxPool2d
    channels, height, width = input_shape
    layers, convs, pools = [], 0, 0
    for entry in plan:
        if entry == "pool":
            pools += 1
            layers.append((f"pool{pools}", MaxPool2d(2)))
            height, width = height // 2, width // 2
            continue
        convs += 1
        layers.append((f"conv{convs}", Conv2d(channels, entry, 3, bias=not batch_norm, dtype=dtype)))
        if batch_norm:  # the conv's bias would duplicate batch norm's β; the ReLU is batch norm's
            layers.append((f"bn{convs}", BatchNorm2d(entry, relu=True, dtype=dtype)))
        else:
            layers.append((f"conv{convs}_relu", ReLU()))
        channels = entry
    return layers, (channels, height, width)


def conv_net(plan, input_shape=CIFAR_SHAPE, dropout=0.0, dtype=np.float32):
    """Conv-2/4/6: the conv ``plan``, then fully connected 256, 256, 10 with ReLU (Figure 2)."""
    layers, (channels, height, width) = _conv_stack(plan, input_shape, False, dtype)
    layers.append(("flatten", Flatten()))
    sizes = [channels * height * width, 256, 256, 10]
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        layers.append((f"fc{index}", Dense(fan_in, fan_out, dtype)))
        if index < len(sizes) - 1:
            layers.append((f"fc{index}_relu", ReLU()))
            if dropout:  # Section 3's dropout variant
                layers.append((f"fc{index}_dropout", Dropout(dropout)))
    return layers


def conv2(input_shape=CIFAR_SHAPE, dropout=0.0, dtype=np.float32):
    """Conv-2: 64, 64, pool; fc 256, 256, 10."""
    return conv_net([64, 64, "pool"], input_shape, dropout, dtype)


def conv4(input_shape=CIFAR_SHAPE, dropout=0.0, dtype=np.float32):
    """Conv-4: 64, 64, pool, 128, 128, pool; fc 256, 256, 10."""
    return conv_net([64, 64, "pool", 128, 128, "pool"], input_shape, dropout, dtype)


def conv6(input_shape=CIFAR_SHAPE, dropout=0.0, dtype=np.float32):
    """Conv-6: 64, 64, pool, 128, 128, pool, 256, 256, pool; fc 256, 256, 10."""
    return conv_net([64, 64, "pool", 128, 128, "pool", 256, 256, "pool"], input_shape, dropout, dtype)


def vgg19(input_shape=CIFAR_SHAPE, dropout=0.0, dtype=np.float32):
    """VGG-19 with batch norm (Simonyan & Zisserman 2015, CIFAR form): 2x64 pool 2x128 pool
    4x256 pool 4x512 pool 4x512, global average pool, fc 10. ``dropout`` is not used."""
    from .conv import GlobalAvgPool
    plan = [64, 64, "pool", 128, 128, "pool", 256, 256, 256, 256, "pool",
            512, 512, 512, 512, "pool", 512, 512, 512, 512]
    layers, (channels, _, _) = _conv_stack(plan, input_shape, True, dtype)
    return layers + [("avgpool", GlobalAvgPool()), ("fc", Dense(channels, 10, dtype))]


def resnet18(input_shape=CIFAR_SHAPE, dropout=0.0, dtype=np.float32):
    """The paper's Resnet-18, the CIFAR residual net of He et al. (2016): conv 16 with batch
    norm and ReLU, three stages of three blocks of width 16, 32, 64 (stride 2 and a
    projection shortcut entering stages 2 and 3), global average pool, fc 10.
    ``dropout`` is not used."""
    from .conv import BatchNorm2d, Conv2d, GlobalAvgPool, ResidualBlock
    layers = [("conv", Conv2d(input_shape[0], 16, 3, bias=False, dtype=dtype)),
              ("bn", BatchNorm2d(16, relu=True, dtype=dtype))]  # batch norm, then ReLU
    channels, block = 16, 0
    for stage, width in enumerate([16, 32, 64]):
        for index in range(3):
            block += 1
            stride = 2 if stage > 0 and index == 0 else 1
            layers.append((f"block{block}", ResidualBlock(channels, width, stride, dtype)))
            channels = width
    return layers + [("avgpool", GlobalAvgPool()), ("fc", Dense(channels, 10, dtype))]


BUILDERS = {"lenet": lenet, "conv2": conv2, "conv4": conv4, "conv6": conv6,
            "resnet18": resnet18, "vgg19": vgg19}
