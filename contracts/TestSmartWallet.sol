// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// A minimal smart-contract wallet for tests: it answers EIP-1271 `isValidSignature` with the
/// magic value when its owner's key signed the hash (65-byte r‖s‖v), as account-abstraction
/// wallets do, so a sign-in "by" this contract can only be verified on chain.
contract TestSmartWallet {
    address public immutable owner;

    constructor(address owner_) {
        owner = owner_;
    }

    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) return 0xffffffff;
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) v += 27;
        address signer = ecrecover(hash, v, r, s);
        return signer != address(0) && signer == owner ? bytes4(0x1626ba7e) : bytes4(0xffffffff);
    }
}
